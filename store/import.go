package store

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// The import of a JSON store, the format before the database: one JSON
// file holding every API-made item. Open finds one at the store's path by
// its first byte ('{') and imports it in steps that a crash may interrupt
// anywhere:
//
//  1. the database is built in <path>.import beside it (the items,
//     revision 1, an audit entry of action "import") and fsynced;
//  2. the JSON file is renamed to <path>.json-imported (kept for the
//     operator; nothing reads it again);
//  3. the database is renamed to <path>.
//
// Each rename is followed by an fsync of the directory. Open first finishes
// or undoes an interrupted import: a <path>.import beside a missing <path>
// is a complete database (the crash fell between 2 and 3) and is renamed
// into place; one beside the JSON file is a partial one (the crash fell in
// 1) and is removed, and the import starts over.

// importSuffix names the database an import builds; importedSuffix the JSON
// file once imported.
const (
	importSuffix   = ".import"
	importedSuffix = ".json-imported"
)

// jsonVersion is the version of the JSON store's format.
const jsonVersion = 1

type jsonStore struct {
	Version  int           `json:"version"`
	Prefixes []jsonPrefix  `json:"prefixes"`
	Bindings []jsonBinding `json:"bindings"`
}

// The JSON store's items carry no ids: ids derive from the CIDR (and
// protocol and port), and a binding's prefix from containment.

type jsonPrefix struct {
	CIDR    string `json:"cidr"`
	Service string `json:"service_id"`
}

type jsonBinding struct {
	CIDR     string `json:"cidr"`
	Protocol string `json:"protocol,omitempty"`
	Port     uint16 `json:"port,omitempty"`
	Service  string `json:"service_id"`
}

// readJSON reads a JSON store's items (Source FromAPI), each binding's
// PrefixID set to the prefix of the file that contains it, if any. A file
// that cannot be decoded, or whose items are malformed, is an error naming
// the file and the item.
func readJSON(path string) (*bindings.State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("store %s: read: %w", path, err)
	}
	var f jsonStore
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("store %s is corrupt: %v", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("store %s is corrupt: data after the document", path)
	}
	if f.Version != jsonVersion {
		return nil, fmt.Errorf("store %s has version %d, this binary reads version %d", path, f.Version, jsonVersion)
	}
	st := &bindings.State{}
	for i, p := range f.Prefixes {
		cidr, err := bindings.ParseCIDR(p.CIDR)
		if err != nil {
			return nil, fmt.Errorf("store %s: prefixes[%d]: cidr: %v", path, i, err)
		}
		svc, err := bindings.ParseService(p.Service)
		if err != nil {
			return nil, fmt.Errorf("store %s: prefixes[%d] %s: service_id: %v", path, i, cidr, err)
		}
		st.Prefixes = append(st.Prefixes, bindings.NewPrefix(cidr, svc, bindings.FromAPI))
	}
	for i, b := range f.Bindings {
		cidr, err := bindings.ParseCIDR(b.CIDR)
		if err != nil {
			return nil, fmt.Errorf("store %s: bindings[%d]: cidr: %v", path, i, err)
		}
		svc, err := bindings.ParseService(b.Service)
		if err != nil {
			return nil, fmt.Errorf("store %s: bindings[%d] %s: service_id: %v", path, i, cidr, err)
		}
		proto, _, err := dispatch.ParseScope(b.Protocol, int(b.Port))
		if err != nil {
			return nil, fmt.Errorf("store %s: bindings[%d] %s: protocol %q and port %d do not make a port scope (%v)", path, i, cidr, b.Protocol, b.Port, err)
		}
		st.Bindings = append(st.Bindings, bindings.NewBinding(cidr, proto, b.Port, svc, bindings.FromAPI))
	}
	st.AssignPrefixes()
	return st, nil
}

// recoverImport finishes or undoes an import a crash interrupted.
func (s *Bolt) recoverImport() error {
	tmp := s.path + importSuffix
	if _, err := os.Lstat(tmp); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	if _, err := os.Lstat(s.path); errors.Is(err, fs.ErrNotExist) {
		s.opts.Logger.Warn("finishing the import of the JSON store a stop interrupted", "store", s.path, "database", tmp)
		if err := renameSync(tmp, s.path); err != nil {
			return fmt.Errorf("store %s: finish the interrupted import: %w", s.path, err)
		}
		return nil
	}
	s.opts.Logger.Warn("removing the partial database of an interrupted import", "store", s.path, "database", tmp)
	if err := os.Remove(tmp); err != nil {
		s.opts.Logger.Warn("the partial database of an interrupted import stays", "store", s.path, "err", err)
	}
	return nil
}

// importJSON imports the JSON store at the store's path (see above).
func (s *Bolt) importJSON() error {
	st, err := readJSON(s.path)
	if err != nil {
		return err
	}
	if err := s.assignConfigPrefixes(st); err != nil {
		return err
	}
	recs := make([]bindings.Record, 0, len(st.Prefixes)+len(st.Bindings))
	for _, p := range st.Prefixes {
		recs = append(recs, bindings.EncodePrefix(p))
	}
	for _, b := range st.Bindings {
		recs = append(recs, bindings.EncodeBinding(b))
	}
	// In key order, bbolt fills its pages one after the other; of two items
	// of one key (a file written by hand), the later stays.
	slices.SortStableFunc(recs, func(a, b bindings.Record) int { return cmp.Compare(a.Key, b.Key) })

	tmp := s.path + importSuffix
	if err := s.buildImport(tmp, recs); err != nil {
		os.Remove(tmp)
		return err
	}
	aside := s.path + importedSuffix
	if err := renameSync(s.path, aside); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store %s: import: rename the JSON store aside: %w", s.path, err)
	}
	if err := renameSync(tmp, s.path); err != nil {
		return fmt.Errorf("store %s: import: rename the database into place: %w", s.path, err)
	}
	s.opts.Logger.Info("imported the JSON store into the database", "store", s.path,
		"prefixes", len(st.Prefixes), "bindings", len(st.Bindings), "json", aside)
	return nil
}

// assignConfigPrefixes sets the PrefixID of st's bindings that lie in none
// of st's prefixes to the configuration's prefix that contains them. A
// binding inside no prefix at all is an error naming it.
func (s *Bolt) assignConfigPrefixes(st *bindings.State) error {
	cfg := &bindings.State{Prefixes: s.opts.Prefixes}
	for i := range st.Bindings {
		b := &st.Bindings[i]
		if b.PrefixID != "" {
			continue
		}
		p, ok := cfg.PrefixOf(b.CIDR)
		if !ok {
			return fmt.Errorf("store %s: import: %s lies inside no prefix of the store or the configuration", s.path, b)
		}
		b.PrefixID = p.ID
	}
	return nil
}

// buildImport writes the database at tmp: recs, revision 1 and the
// import's audit entry, in one transaction, fsynced.
func (s *Bolt) buildImport(tmp string, recs []bindings.Record) error {
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store %s: import: %w", s.path, err)
	}
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: s.opts.Timeout})
	if err != nil {
		return fmt.Errorf("store %s: import: %v", s.path, err)
	}
	entry, _ := json.Marshal(bindings.AuditEntry{
		Revision: 1, Time: s.opts.now().UTC(), Who: "edgeproxy", Action: "import", Count: len(recs),
	})
	err = db.Update(func(tx *bolt.Tx) error {
		if err := checkLayout(tmp, tx, true); err != nil {
			return err
		}
		items := tx.Bucket(itemsBucket)
		items.FillPercent = 0.9
		for _, r := range recs {
			if err := items.Put([]byte(r.Key), r.Value); err != nil {
				return fmt.Errorf("put %s: %v", r.Key, err)
			}
		}
		if err := tx.Bucket(metaBucket).Put(revisionKey, u64(1)); err != nil {
			return err
		}
		return s.appendAudit(tx, 1, entry)
	})
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store %s: import: %v", s.path, err)
	}
	return syncDir(filepath.Dir(tmp))
}

// renameSync renames from to to and fsyncs their directory.
func renameSync(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	return syncDir(filepath.Dir(to))
}

// syncDir fsyncs a directory, making the names in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
