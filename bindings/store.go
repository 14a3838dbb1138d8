package bindings

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// FileStore persists the prefixes and bindings made through the admin API in
// one JSON file, rewritten atomically on every change: a temporary file in
// the same directory, fsync, rename, fsync of the directory. A crash at any
// point leaves the old file or the new one, never a mix, so a change that
// was acknowledged after Save returned is never lost.
//
// Save writes only when the API-made items differ from what the file holds,
// so that starts and reloads that change nothing write nothing. A store in
// a directory this process cannot write opens read-only: Load works, Save
// of anything new fails with ErrReadOnly, and Writable says so (the admin
// API then answers 503 naming the store).
type FileStore struct {
	path string

	mu       sync.Mutex
	last     []byte // the encoding of what the file holds; nil before Load
	readOnly error  // why the directory cannot be written, or nil
}

// ErrReadOnly reports a store whose directory cannot be written (a
// read-only filesystem, no permission, no space); the error wrapping it
// names the store and the system's reason.
var ErrReadOnly = errors.New("the store cannot be written")

// storeVersion is the version of the file format.
const storeVersion = 1

type storeFile struct {
	Version  int             `json:"version"`
	Prefixes []storedPrefix  `json:"prefixes"`
	Bindings []storedBinding `json:"bindings"`
}

// The items carry no ids: ids derive from the CIDR (and protocol and port),
// and a binding's prefix from containment. The file stays small, which
// keeps its fsync short.

type storedPrefix struct {
	CIDR    string `json:"cidr"`
	Service string `json:"service_id"`
}

type storedBinding struct {
	CIDR     string `json:"cidr"`
	Protocol string `json:"protocol,omitempty"`
	Port     uint16 `json:"port,omitempty"`
	Service  string `json:"service_id"`
}

// NewStore returns the store at path. Nothing is read or written yet.
func NewStore(path string) *FileStore { return &FileStore{path: path} }

// Path returns the file's path.
func (s *FileStore) Path() string { return s.path }

// Load reads the API-made prefixes and bindings. A missing file is an empty
// store. A file that cannot be decoded, or whose items are malformed, is an
// error naming the file and the item: it is never silently ignored.
//
// Load also removes the temporary files a killed writer left behind (the
// store has one writer: the process holding the pin dir's lock), and finds
// out whether the directory can be written.
func (s *FileStore) Load() (*State, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = encodeState(st)
	s.readOnly = s.probe()
	if s.readOnly == nil {
		if err := s.removeStale(); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func (s *FileStore) load() (*State, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: read: %w", s.path, err)
	}
	var f storeFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("store %s is corrupt: %v", s.path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("store %s is corrupt: data after the document", s.path)
	}
	if f.Version != storeVersion {
		return nil, fmt.Errorf("store %s has version %d, this binary reads version %d", s.path, f.Version, storeVersion)
	}
	st := &State{}
	for i, p := range f.Prefixes {
		cidr, err := ParseCIDR(p.CIDR)
		if err != nil {
			return nil, fmt.Errorf("store %s: prefixes[%d]: cidr: %v", s.path, i, err)
		}
		svc, err := ParseService(p.Service)
		if err != nil {
			return nil, fmt.Errorf("store %s: prefixes[%d] %s: service_id: %v", s.path, i, cidr, err)
		}
		st.Prefixes = append(st.Prefixes, NewPrefix(cidr, svc, FromAPI))
	}
	for i, b := range f.Bindings {
		cidr, err := ParseCIDR(b.CIDR)
		if err != nil {
			return nil, fmt.Errorf("store %s: bindings[%d]: cidr: %v", s.path, i, err)
		}
		svc, err := ParseService(b.Service)
		if err != nil {
			return nil, fmt.Errorf("store %s: bindings[%d] %s: service_id: %v", s.path, i, cidr, err)
		}
		proto, _, err := dispatch.ParseScope(b.Protocol, int(b.Port))
		if err != nil {
			return nil, fmt.Errorf("store %s: bindings[%d] %s: protocol %q and port %d do not make a port scope (%v)", s.path, i, cidr, b.Protocol, b.Port, err)
		}
		st.Bindings = append(st.Bindings, NewBinding(cidr, proto, b.Port, svc, FromAPI))
	}
	return st, nil
}

// tmpPattern names the temporary files of a store's writes.
func (s *FileStore) tmpPattern() string { return "." + filepath.Base(s.path) + ".tmp-*" }

// probe says why the store's directory cannot be written, or nil. A
// missing directory is created.
func (s *FileStore) probe() error {
	dir := filepath.Dir(s.path)
	err := os.MkdirAll(dir, 0o700)
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(dir, s.tmpPattern()); err == nil {
			f.Close()
			err = os.Remove(f.Name())
		}
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("store %s: %w: %v", s.path, ErrReadOnly, err)
}

// removeStale removes the temporary files of writes that never completed.
func (s *FileStore) removeStale() error {
	stale, err := filepath.Glob(filepath.Join(filepath.Dir(s.path), s.tmpPattern()))
	if err != nil {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	for _, f := range stale {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store %s: remove the stale temporary file %s: %w", s.path, f, err)
		}
	}
	return nil
}

// Writable returns nil when Save can write, or why not (ErrReadOnly,
// naming the store). A read-only store looks again, so that a directory
// made writable is noticed without a restart.
func (s *FileStore) Writable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readOnly != nil {
		s.readOnly = s.probe()
	}
	return s.readOnly
}

// Save writes the API-made items of st (Source FromAPI), replacing the file
// atomically. When Save returns nil the change is on disk. When the items
// are those the file holds already, nothing is written. The encoding is
// written by hand, cheap beside the file's fsync, which dominates.
func (s *FileStore) Save(st *State) error {
	b := encodeState(st)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last != nil && sameItems(b, s.last) {
		return nil
	}
	if s.readOnly != nil {
		if s.readOnly = s.probe(); s.readOnly != nil {
			return s.readOnly
		}
	}
	if err := writeAtomic(s.path, b); err != nil {
		if errors.Is(err, syscall.EROFS) {
			// Remounted read-only under us: refuse further changes
			// up front until it can be written again.
			s.readOnly = fmt.Errorf("store %s: %w: %v", s.path, ErrReadOnly, err)
		}
		return err
	}
	s.last = b
	return nil
}

// bindingsMark separates the prefixes from the bindings in the encoding.
const bindingsMark = "\n],\"bindings\":["

// sameItems reports whether two encodings hold the same items, in any order.
func sameItems(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if len(a) != len(b) {
		return false
	}
	items := func(enc []byte) (p, bd [][]byte) {
		head, tail, _ := bytes.Cut(enc, []byte(bindingsMark))
		_, head, _ = bytes.Cut(head, []byte("[\n"))
		tail = bytes.TrimPrefix(bytes.TrimSuffix(tail, []byte("\n]}\n")), []byte("\n"))
		split := func(sec []byte) [][]byte {
			if len(sec) == 0 {
				return nil
			}
			sec = bytes.TrimSuffix(bytes.TrimPrefix(sec, []byte("{")), []byte("}"))
			xs := bytes.Split(sec, []byte("},{"))
			slices.SortFunc(xs, bytes.Compare)
			return xs
		}
		return split(head), split(tail)
	}
	pa, ba := items(a)
	pb, bb := items(b)
	return slices.EqualFunc(pa, pb, bytes.Equal) && slices.EqualFunc(ba, bb, bytes.Equal)
}

// encodeState encodes the API-made items of st, an item per line.
func encodeState(st *State) []byte {
	b := make([]byte, 0, 64+48*(len(st.Prefixes)+len(st.Bindings)))
	b = fmt.Appendf(b, "{\"version\":%d,\"prefixes\":[", storeVersion)
	sep := byte('\n')
	for _, p := range st.Prefixes {
		if p.Source != FromAPI {
			continue
		}
		b = append(b, sep)
		sep = ','
		b = append(b, `{"cidr":"`...)
		b = p.CIDR.AppendTo(b)
		b = append(b, `","service_id":"`...)
		b = append(b, p.Service...)
		b = append(b, `"}`...)
	}
	b = append(b, "\n],\"bindings\":["...)
	sep = '\n'
	for _, bd := range st.Bindings {
		if bd.Source != FromAPI {
			continue
		}
		b = append(b, sep)
		sep = ','
		b = append(b, `{"cidr":"`...)
		b = bd.CIDR.AppendTo(b)
		if bd.PortScoped() {
			b = append(b, `","protocol":"`...)
			b = append(b, bd.Protocol.String()...)
			b = append(b, `","port":`...)
			b = strconv.AppendUint(b, uint64(bd.Port), 10)
			b = append(b, `,"service_id":"`...)
		} else {
			b = append(b, `","service_id":"`...)
		}
		b = append(b, bd.Service...)
		b = append(b, `"}`...)
	}
	b = append(b, "\n]}\n"...)
	return b
}

// writeAtomic replaces path with data: temporary file, fsync, rename, fsync
// of the directory.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("store: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("store: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: fsync %s: %w", dir, err)
	}
	return nil
}

// The FileStore as a Store: it keeps the items it holds and rewrites the
// file with the mutation applied.

// LoadState reads the items; the file keeps no revision.
func (s *FileStore) loadState() (*State, error) { return s.Load() }

type fileBacked struct {
	*FileStore
	st *State
}

// AsStore returns s as a Store.
func (s *FileStore) AsStore() Store { return &fileBacked{FileStore: s} }

func (f *fileBacked) Load() (*State, int64, error) {
	st, err := f.FileStore.loadState()
	if err != nil {
		return nil, 0, err
	}
	f.st = st.Clone()
	st.AssignPrefixes()
	f.st = st.Clone()
	return st, 0, nil
}

func (f *fileBacked) Commit(rev int64, m Mutation) error {
	next := f.st.Clone()
	drop := map[string]bool{}
	for _, k := range m.Delete {
		drop[k] = true
	}
	for _, rs := range [][]Record{m.Update, m.Create} {
		for _, r := range rs {
			drop[r.Key] = true
		}
	}
	keep := &State{}
	for _, p := range next.Prefixes {
		if !drop[PrefixKey(p.ID)] {
			keep.Prefixes = append(keep.Prefixes, p)
		}
	}
	for _, b := range next.Bindings {
		if !drop[KeyOf(b)] {
			keep.Bindings = append(keep.Bindings, b)
		}
	}
	for _, rs := range [][]Record{m.Update, m.Create} {
		for _, r := range rs {
			d, err := DecodeRecord(r.Key, r.Value)
			if err != nil {
				return err
			}
			if d.Prefix != nil {
				keep.Prefixes = append(keep.Prefixes, *d.Prefix)
			} else {
				keep.Bindings = append(keep.Bindings, *d.Binding)
			}
		}
	}
	if err := f.Save(keep); err != nil {
		return err
	}
	f.st = keep
	return nil
}

func (f *fileBacked) Audit(since int64, limit int) ([]AuditEntry, error) { return nil, nil }
func (f *fileBacked) Close() error                                       { return nil }
func (f *fileBacked) String() string                                     { return "store " + f.path }
