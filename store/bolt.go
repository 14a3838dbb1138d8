// Package store is the embedded store of the API-made prefixes and
// bindings: a bbolt database, one key per item (the keys and values of the
// store's contract in bindings/records.go), one transaction per change.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// Defaults of Options.
const (
	DefaultTimeout        = time.Second
	DefaultAuditRetention = 100000
	DefaultAuditMaxAge    = 30 * 24 * time.Hour
)

// auditTrimBatch bounds the audit entries one commit removes, so that no
// commit pays for a big trim; each commit adds at most one, so the audit
// bucket comes back under its bounds.
const auditTrimBatch = 16

// formatVersion is the version of the database's layout (its buckets and
// the meta keys).
const formatVersion = 1

// The buckets and the meta keys.
var (
	itemsBucket = []byte("items")
	metaBucket  = []byte("meta")
	auditBucket = []byte("audit")

	formatKey     = []byte("format")
	revisionKey   = []byte("revision")
	auditCountKey = []byte("audit_count")
)

// Options tune a store.
type Options struct {
	// Timeout bounds the wait for the file's lock (default DefaultTimeout).
	Timeout time.Duration
	// AuditRetention is how many audit entries are kept at most (default
	// DefaultAuditRetention).
	AuditRetention int
	// AuditMaxAge is how old an audit entry may grow before it is removed
	// (default DefaultAuditMaxAge).
	AuditMaxAge time.Duration
	// Logger takes the import of a JSON store and the switches between
	// read-only and writable (default: no log).
	Logger *slog.Logger
	// Prefixes are the configuration's prefixes: an imported JSON store's
	// bindings that lie inside none of its own prefixes belong to them.
	Prefixes []bindings.Prefix

	// now is the clock, for tests.
	now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.AuditRetention <= 0 {
		o.AuditRetention = DefaultAuditRetention
	}
	if o.AuditMaxAge <= 0 {
		o.AuditMaxAge = DefaultAuditMaxAge
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o
}

// Bolt is the store in a bbolt database. It implements bindings.Store.
//
// A store whose directory or file cannot be written opens read-only: Load
// and Audit work, Commit fails with bindings.ErrReadOnly, and Writable says
// why; Writable and Commit look again, and reopen the database read-write
// once it can be written, without a restart.
type Bolt struct {
	path string
	opts Options

	mu       sync.Mutex
	db       *bolt.DB        // nil: no file (a read-only store whose file is missing) or a JSON store read in memory
	json     *bindings.State // a JSON store read but not imported (its directory cannot be written)
	readOnly error           // why the store cannot be written, or nil
	fixed    bool            // opened read-only on purpose (OpenReadOnly): never reopened read-write
	closed   bool
}

var _ bindings.Store = (*Bolt)(nil)

// Open opens the store at path, creating the file (and its directory, mode
// 0700) when it is missing. A JSON store file at path (the format before
// the database) is imported first (see import.go). A store whose directory
// or file cannot be written opens read-only. Open waits at most
// opts.Timeout for the file's lock; a store held by another process is an
// *InUseError.
func Open(path string, opts Options) (*Bolt, error) {
	s := &Bolt{path: path, opts: opts.withDefaults()}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenReadOnly opens the store at path read-only, for a look that must
// not disturb a running node (edgeproxy check): it writes nothing, creates
// nothing, imports nothing (a JSON store is read as it is) and waits at
// most timeout for the lock; a store held by a running node is an
// *InUseError.
func OpenReadOnly(path string, timeout time.Duration) (*Bolt, error) {
	s := &Bolt{path: path, opts: Options{Timeout: timeout}.withDefaults(), fixed: true}
	s.readOnly = fmt.Errorf("store %s: %w: opened read-only", path, bindings.ErrReadOnly)
	kind, err := s.kind()
	switch {
	case err != nil:
		return nil, err
	case kind == missing:
		// An import a stop interrupted between its renames: the next
		// start takes the database it built.
		if _, err := os.Stat(path + importSuffix); err == nil {
			if s.db, err = s.openDB(path+importSuffix, true); err != nil {
				return nil, err
			}
		}
		return s, nil
	case kind == jsonFile:
		st, err := readJSON(path)
		if err != nil {
			return nil, err
		}
		s.json = st
		return s, nil
	}
	if s.db, err = s.openDB(path, true); err != nil {
		return nil, err
	}
	return s, nil
}

// String names the store.
func (s *Bolt) String() string { return "store " + s.path }

// Path returns the database's path.
func (s *Bolt) Path() string { return s.path }

// fileKind is what the store's path holds.
type fileKind int

const (
	missing fileKind = iota
	database
	jsonFile
)

// kind says what path holds: nothing, a JSON store (its first byte is
// '{'), or anything else, which bbolt then reads as a database.
func (s *Bolt) kind() (fileKind, error) {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return missing, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store %s: read: %w", s.path, err)
	}
	defer f.Close()
	var b [1]byte
	n, err := f.Read(b[:])
	switch {
	case n == 1 && b[0] == '{':
		return jsonFile, nil
	case err != nil && !errors.Is(err, io.EOF):
		return 0, fmt.Errorf("store %s: read: %w", s.path, err)
	}
	return database, nil // bbolt says what is wrong with anything else
}

// open opens (or creates, or imports) the store, read-write when it can be
// written, else read-only.
func (s *Bolt) open() error {
	if err := s.recoverImport(); err != nil {
		return err
	}
	kind, err := s.kind()
	if err != nil {
		return err
	}
	s.readOnly = s.probe()
	if s.readOnly != nil {
		s.opts.Logger.Warn("the store cannot be written: it opens read-only", "store", s.path, "reason", s.readOnly)
		switch kind {
		case missing:
			return nil
		case jsonFile:
			st, err := readJSON(s.path)
			if err != nil {
				return err
			}
			s.json = st
			return nil
		}
		s.db, err = s.openDB(s.path, true)
		return err
	}
	if kind == jsonFile {
		if err := s.importJSON(); err != nil {
			return err
		}
	}
	s.db, err = s.openDB(s.path, false)
	return err
}

// probe says why the store cannot be written, or nil. A missing directory
// is created.
func (s *Bolt) probe() error {
	dir := filepath.Dir(s.path)
	err := os.MkdirAll(dir, 0o700)
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(dir, "."+filepath.Base(s.path)+".probe-*"); err == nil {
			f.Close()
			err = os.Remove(f.Name())
		}
	}
	if err == nil {
		var f *os.File
		if f, err = os.OpenFile(s.path, os.O_RDWR, 0); err == nil {
			f.Close()
		} else if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("store %s: %w: %v", s.path, bindings.ErrReadOnly, err)
}

// openDB opens the database at path and checks (read-write: makes) its
// buckets and format.
func (s *Bolt) openDB(path string, readOnly bool) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: s.opts.Timeout, ReadOnly: readOnly})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, inUse(path)
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: %v", path, err)
	}
	if readOnly {
		err = db.View(func(tx *bolt.Tx) error { return checkLayout(path, tx, false) })
	} else {
		err = db.Update(func(tx *bolt.Tx) error { return checkLayout(path, tx, true) })
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// checkLayout checks the format and the buckets; fresh makes those of a
// new database.
func checkLayout(path string, tx *bolt.Tx, fresh bool) error {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		if tx.Bucket(itemsBucket) != nil || tx.Bucket(auditBucket) != nil {
			return fmt.Errorf("store %s is corrupt: no %s bucket", path, metaBucket)
		}
		if !fresh {
			return nil // a new database whose buckets were never made: empty
		}
		for _, b := range [][]byte{metaBucket, itemsBucket, auditBucket} {
			if _, err := tx.CreateBucket(b); err != nil {
				return fmt.Errorf("store %s: %v", path, err)
			}
		}
		return tx.Bucket(metaBucket).Put(formatKey, u64(formatVersion))
	}
	f := meta.Get(formatKey)
	if len(f) != 8 {
		return fmt.Errorf("store %s is corrupt: meta/%s is %d bytes, want 8", path, formatKey, len(f))
	}
	if v := binary.BigEndian.Uint64(f); v != formatVersion {
		return fmt.Errorf("store %s has format %d, this binary reads format %d", path, v, formatVersion)
	}
	if tx.Bucket(itemsBucket) == nil || tx.Bucket(auditBucket) == nil {
		return fmt.Errorf("store %s is corrupt: a bucket is missing", path)
	}
	if _, err := metaInt(path, meta, revisionKey); err != nil {
		return err
	}
	return nil
}

// u64 is n as 8 bytes, big-endian: the revisions, the audit's keys.
func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// metaInt reads an integer of the meta bucket (absent: 0).
func metaInt(path string, meta *bolt.Bucket, key []byte) (int64, error) {
	v := meta.Get(key)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("store %s is corrupt: meta/%s is %d bytes, want 8", path, key, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// Load reads every item, in one pass of a cursor, and the revision they
// are at. A value it cannot decode is an error naming the store and the
// key.
func (s *Bolt) Load() (*bindings.State, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, 0, fmt.Errorf("store %s: closed", s.path)
	}
	if s.json != nil {
		return s.json.Clone(), 0, nil
	}
	st := &bindings.State{}
	if s.db == nil {
		return st, 0, nil
	}
	var rev int64
	err := s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		if meta == nil {
			return nil
		}
		var err error
		if rev, err = metaInt(s.path, meta, revisionKey); err != nil {
			return err
		}
		var recs []rawRecord
		c := tx.Bucket(itemsBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			recs = append(recs, rawRecord{k, v})
		}
		st, err = s.decode(recs)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return st, rev, nil
}

// rawRecord is a key and its value as the database holds them (valid in
// their transaction only).
type rawRecord struct{ key, value []byte }

// decode decodes recs on every processor, each a run of them, into a state
// in their order. The first value that cannot be decoded is the error.
func (s *Bolt) decode(recs []rawRecord) (*bindings.State, error) {
	workers := min(runtime.GOMAXPROCS(0), max(1, len(recs)/decodeRun))
	parts := make([]bindings.State, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		run := recs[w*len(recs)/workers : (w+1)*len(recs)/workers]
		wg.Go(func() {
			part := &parts[w]
			for _, r := range run {
				d, err := bindings.DecodeRecord(string(r.key), r.value)
				if err != nil {
					errs[w] = fmt.Errorf("store %s: %v", s.path, err)
					return
				}
				if d.Prefix != nil {
					part.Prefixes = append(part.Prefixes, *d.Prefix)
				} else {
					part.Bindings = append(part.Bindings, *d.Binding)
				}
			}
		})
	}
	wg.Wait()
	st := &bindings.State{}
	for w := range parts {
		if errs[w] != nil {
			return nil, errs[w]
		}
		st.Prefixes = append(st.Prefixes, parts[w].Prefixes...)
		st.Bindings = append(st.Bindings, parts[w].Bindings...)
	}
	return st, nil
}

// decodeRun is the fewest records worth a goroutine of their own.
const decodeRun = 4096

// ErrMismatch reports a mutation that does not fit what the store holds:
// a key to create is present, one to update or delete is absent, or the
// revision is not after the stored one. The caller's state and the store
// disagree.
var ErrMismatch = errors.New("the change does not fit what the store holds")

// Commit writes m at revision rev in one transaction, with its audit entry
// (Revision filled in, Time when unset), and trims the oldest audit
// entries past the retention. When Commit returns nil the change is on
// disk. A mutation that changes nothing and has no audit entry writes
// nothing, even to a read-only store (a start or reload that changes
// nothing).
func (s *Bolt) Commit(rev int64, m bindings.Mutation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("store %s: closed", s.path)
	}
	if m.Empty() && m.Audit == nil {
		return nil
	}
	if err := s.writable(); err != nil {
		return err
	}
	var audit []byte
	if m.Audit != nil {
		e := *m.Audit
		e.Revision = rev
		if e.Time.IsZero() {
			e.Time = s.opts.now().UTC()
		}
		var err error
		if audit, err = json.Marshal(e); err != nil {
			return fmt.Errorf("store %s: audit entry: %v", s.path, err)
		}
	}
	// bbolt splits its pages only when a transaction commits: keys put in
	// order land at the end of a page, in any other order they shift it.
	m.Create = sortedRecords(m.Create)
	m.Update = sortedRecords(m.Update)
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, items := tx.Bucket(metaBucket), tx.Bucket(itemsBucket)
		cur, err := metaInt(s.path, meta, revisionKey)
		if err != nil {
			return err
		}
		if rev <= cur {
			return fmt.Errorf("store %s: %w: revision %d is not after the stored revision %d", s.path, ErrMismatch, rev, cur)
		}
		for _, r := range m.Create {
			if items.Get([]byte(r.Key)) != nil {
				return fmt.Errorf("store %s: %w: create %s: the key is present", s.path, ErrMismatch, r.Key)
			}
			if err := items.Put([]byte(r.Key), r.Value); err != nil {
				return fmt.Errorf("store %s: put %s: %v", s.path, r.Key, err)
			}
		}
		for i, r := range m.Update {
			if i > 0 && m.Update[i-1].Key == r.Key {
				return fmt.Errorf("store %s: %w: update %s: the key is updated twice", s.path, ErrMismatch, r.Key)
			}
			if items.Get([]byte(r.Key)) == nil {
				return fmt.Errorf("store %s: %w: update %s: the key is absent", s.path, ErrMismatch, r.Key)
			}
			if err := items.Put([]byte(r.Key), r.Value); err != nil {
				return fmt.Errorf("store %s: put %s: %v", s.path, r.Key, err)
			}
		}
		for _, k := range m.Delete {
			if items.Get([]byte(k)) == nil {
				return fmt.Errorf("store %s: %w: delete %s: the key is absent", s.path, ErrMismatch, k)
			}
			if err := items.Delete([]byte(k)); err != nil {
				return fmt.Errorf("store %s: delete %s: %v", s.path, k, err)
			}
		}
		if err := meta.Put(revisionKey, u64(uint64(rev))); err != nil {
			return err
		}
		return s.appendAudit(tx, rev, audit)
	})
	if err != nil && errors.Is(err, syscall.EROFS) {
		// Remounted read-only under us: refuse further changes up
		// front until it can be written again.
		s.readOnly = fmt.Errorf("store %s: %w: %v", s.path, bindings.ErrReadOnly, err)
		s.opts.Logger.Warn("the store cannot be written: it is read-only now", "store", s.path, "reason", err)
	}
	if err != nil && !strings.HasPrefix(err.Error(), s.String()) {
		err = fmt.Errorf("store %s: commit: %w", s.path, err)
	}
	return err
}

// sortedRecords returns recs in key order (a copy, when they are not).
func sortedRecords(recs []bindings.Record) []bindings.Record {
	byKey := func(a, b bindings.Record) int { return strings.Compare(a.Key, b.Key) }
	if slices.IsSortedFunc(recs, byKey) {
		return recs
	}
	recs = slices.Clone(recs)
	slices.SortFunc(recs, byKey)
	return recs
}

// appendAudit adds the entry (when there is one) and removes at most
// auditTrimBatch of the oldest entries beyond the retention's count or age.
func (s *Bolt) appendAudit(tx *bolt.Tx, rev int64, entry []byte) error {
	meta, audit := tx.Bucket(metaBucket), tx.Bucket(auditBucket)
	count, err := metaInt(s.path, meta, auditCountKey)
	if err != nil {
		return err
	}
	if entry != nil {
		if err := audit.Put(u64(uint64(rev)), entry); err != nil {
			return err
		}
		count++
	}
	oldest := s.opts.now().Add(-s.opts.AuditMaxAge)
	var drop [][]byte
	c := audit.Cursor()
	for k, v := c.First(); k != nil && len(drop) < auditTrimBatch; k, v = c.Next() {
		if count-int64(len(drop)) <= int64(s.opts.AuditRetention) && !entryBefore(v, oldest) {
			break
		}
		drop = append(drop, k)
	}
	for _, k := range drop {
		if err := audit.Delete(k); err != nil {
			return err
		}
	}
	count -= int64(len(drop))
	if count < 0 {
		count = 0
	}
	return meta.Put(auditCountKey, u64(uint64(count)))
}

// entryBefore reports whether the audit entry v was made before t. An
// entry that cannot be read is old: the trim removes it.
func entryBefore(v []byte, t time.Time) bool {
	var e struct {
		Time time.Time `json:"time"`
	}
	if json.Unmarshal(v, &e) != nil {
		return true
	}
	return e.Time.Before(t)
}

// Audit returns the audit entries after revision since, oldest first, at
// most limit of them (limit <= 0: all).
func (s *Bolt) Audit(since int64, limit int) ([]bindings.AuditEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("store %s: closed", s.path)
	}
	if s.db == nil {
		return nil, nil
	}
	if since < 0 {
		since = 0
	}
	var out []bindings.AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(auditBucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(u64(uint64(since) + 1)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			var e bindings.AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("store %s: audit entry %d: %v", s.path, binary.BigEndian.Uint64(k), err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Writable returns nil when Commit can write, or why not (wrapping
// bindings.ErrReadOnly and naming the store). A read-only store looks
// again, and reopens the database read-write once it can be written.
func (s *Bolt) Writable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("store %s: closed", s.path)
	}
	return s.writable()
}

// writable is Writable under s.mu.
func (s *Bolt) writable() error {
	if s.readOnly == nil || s.fixed {
		return s.readOnly
	}
	if s.json != nil {
		if err := s.probe(); err != nil {
			return fmt.Errorf("%w; it holds a JSON store, imported at the next start where its directory can be written", err)
		}
		return fmt.Errorf("store %s: %w: it holds a JSON store, imported at the next start", s.path, bindings.ErrReadOnly)
	}
	if err := s.probe(); err != nil {
		s.readOnly = err
		return err
	}
	// Writable again: reopen the database read-write.
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			s.opts.Logger.Warn("closing the read-only database", "store", s.path, "err", err)
		}
		s.db = nil
	}
	db, err := s.openDB(s.path, false)
	if err != nil {
		s.readOnly = fmt.Errorf("store %s: %w: reopen read-write: %v", s.path, bindings.ErrReadOnly, err)
		if s.db, err = s.openDB(s.path, true); err != nil {
			s.opts.Logger.Error("reopening the store read-only", "store", s.path, "err", err)
		}
		return s.readOnly
	}
	s.db, s.readOnly = db, nil
	s.opts.Logger.Info("the store can be written again", "store", s.path)
	return nil
}

// Close releases the database and its lock. The store is unusable after.
func (s *Bolt) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.db == nil {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store %s: close: %v", s.path, err)
	}
	return nil
}

// Seed writes st's API-made items into a new store at path, at revision 1:
// for tests and benchmarks that start a node on a store of a given size.
func Seed(path string, st *bindings.State) error {
	s, err := Open(path, Options{})
	if err != nil {
		return err
	}
	var m bindings.Mutation
	for _, p := range st.Prefixes {
		if p.Source == bindings.FromAPI {
			m.Create = append(m.Create, bindings.EncodePrefix(p))
		}
	}
	for _, b := range st.Bindings {
		if b.Source == bindings.FromAPI {
			m.Create = append(m.Create, bindings.EncodeBinding(b))
		}
	}
	if err := s.Commit(1, m); err != nil {
		s.Close()
		return err
	}
	return s.Close()
}
