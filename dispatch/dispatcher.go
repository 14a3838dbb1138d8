//go:build linux

package dispatch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// metaMagic marks pinned maps as edgeproxy's ("edgeprox").
const metaMagic = 0x786f727065676465

// linkPin is the name of the pinned link in the pin directory.
const linkPin = "link"

// programName is the name of our program. The kernel keeps 15 bytes of it,
// or all of it when the program carries BTF.
const programName = "edgeproxy_dispatch"

var (
	// ErrStale reports pinned state of another schema version.
	ErrStale = errors.New("pinned dispatcher state has another schema version")
	// ErrForeign reports pinned state or an attached program that is not
	// edgeproxy's.
	ErrForeign = errors.New("pinned dispatcher state is not edgeproxy's")
	// ErrClosed is returned by methods of a closed Dispatcher.
	ErrClosed = errors.New("dispatcher is closed")
)

// Options configure a Dispatcher.
type Options struct {
	// PinDir is a directory on a bpf filesystem where the program's link and
	// maps are pinned, so that they outlive the process: bound prefixes stay
	// closed while no process serves them, and the next process takes the
	// state over. The bpf filesystem is mounted on /sys/fs/bpf if PinDir is
	// below it and nothing is mounted there. Empty means unpinned: Close
	// detaches the program and the kernel's normal lookup decides again.
	PinDir string
	// Lock is the caller's hold on PinDir (LockPinDir), taken before
	// anything else could fail; the caller releases it after Close. Nil:
	// Open takes it, and Close releases it. Either way a second writer of
	// the same PinDir fails with ErrLocked before it touches anything.
	Lock *Lock
	// Link, when set, opens the dispatcher for a live upgrade: the
	// descriptor of the running process's link (LinkFile), handed down to
	// this one. The dispatcher then loads maps of its own, of this binary's
	// layout, rather than taking the pinned ones over (their layout or
	// schema may differ), and Attach swaps its program into that link in
	// one step and replaces the pins with its maps. Until Attach the
	// running process's program and maps steer every packet.
	Link *os.File
	// BindingCapacity is the most bindings one table holds, IPv4 and IPv6
	// together; 0 means DefaultBindingCapacity. The binding tries and the
	// per-binding counters (BindingCounters) are sized from it when the
	// program loads: the counters take BindingCounterBytes(capacity) of
	// memory on every CPU, whatever the table holds. A table of more
	// bindings is refused (ErrInvalidTable). Pinned maps keep the capacity
	// they were made with: a process that asks another takes them over only
	// through a live upgrade (Options.Link), which loads maps of its own.
	BindingCapacity int
}

// Dispatcher is a loaded sk_lookup program with its maps.
type Dispatcher struct {
	pinDir string
	lock   *Lock // the lock Open took, released by Close; nil when the caller holds it
	schema uint32
	limits limits
	slots  *slotTable // the bindings' counter slots

	// life is held for reading while objs is in use; Close takes it for
	// writing. Readers (Probe, Counters) need nothing else, so they never
	// wait for a long Replace.
	life sync.RWMutex
	objs *bpf.DispatchObjects // nil once closed

	// labels maps label names to indices, copy-on-write under mu.
	labels atomic.Pointer[map[string]uint32]

	mu       sync.Mutex      // serializes changes; guards the fields below
	link     *link.NetNsLink // nil until attached or taken over
	handed   bool            // opened with Options.Link: Attach swaps and pins
	active   uint32          // the generation the program reads
	written  [2]*entries     // what each generation holds in the kernel
	dirty    [2]bool         // a write to the generation failed half-way
	quiesced chan struct{}
}

// limits are the capacities of the maps for one generation: bind is the
// binding capacity, both families together.
type limits struct {
	bind, apps, ports int
}

// Open loads the program and its maps. With Options.PinDir it takes over
// pinned state when there is some: the maps keep steering as before, and
// Attach swaps the program in the pinned link. It does not attach a new
// program: write a Table with Replace first, then Attach.
func Open(opts Options) (_ *Dispatcher, err error) {
	spec, err := bpf.LoadDispatch()
	if err != nil {
		return nil, fmt.Errorf("load dispatch spec: %w", err)
	}
	d := &Dispatcher{pinDir: opts.PinDir}
	d.labels.Store(&map[string]uint32{})
	if err := d.readSpec(spec); err != nil {
		return nil, err
	}
	if err := d.sizeSpec(spec, opts.BindingCapacity); err != nil {
		return nil, err
	}
	if d.pinDir != "" {
		if err := d.holdPinDir(opts.Lock); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				d.lock.Close()
			}
		}()
	}
	if err := d.load(spec, d.pinDir != "" && opts.Link == nil); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.closeLocked()
		}
	}()
	if err := d.readState(); err != nil {
		return nil, err
	}
	d.slots = newSlotTable(uint32(2*d.limits.bind), d.written, d.active)
	switch {
	case opts.Link != nil:
		if err := d.adoptLink(opts.Link); err != nil {
			return nil, err
		}
	case d.pinDir != "":
		if err := d.loadPinnedLink(); err != nil {
			return nil, err
		}
	}
	// A previous process may have flipped generations a moment ago.
	d.quiesced = readersDone()
	return d, nil
}

// readSpec reads the schema version and the maps' capacities from spec.
func (d *Dispatcher) readSpec(spec *ebpf.CollectionSpec) error {
	v, ok := spec.Variables["schema_version"]
	if !ok {
		return errors.New("dispatch object has no schema_version")
	}
	if err := v.Get(&d.schema); err != nil {
		return fmt.Errorf("read schema_version: %w", err)
	}
	d.limits = limits{
		apps:  int(spec.Maps[bpf.DispatchMapApp4].MaxEntries / 2),
		ports: int(spec.Maps[bpf.DispatchMapPorts].MaxEntries / 2),
	}
	return nil
}

// sizeSpec sizes the maps of spec for binding capacity c (0: the default).
func (d *Dispatcher) sizeSpec(spec *ebpf.CollectionSpec, c int) error {
	if c == 0 {
		c = DefaultBindingCapacity
	}
	if c < 1 || c > MaxBindingCapacity {
		return fmt.Errorf("dispatch: binding capacity %d: must be between 1 and %d", c, MaxBindingCapacity)
	}
	for _, name := range capacityMaps {
		spec.Maps[name].MaxEntries = uint32(2 * c)
	}
	d.limits.bind = c
	return nil
}

// holdPinDir takes the pin dir's lock, or checks that l, the caller's, is
// on the pin dir.
func (d *Dispatcher) holdPinDir(l *Lock) error {
	if l == nil {
		var err error
		d.lock, err = LockPinDir(d.pinDir)
		return err
	}
	if l.Dir() != filepath.Clean(d.pinDir) {
		return fmt.Errorf("dispatch: the lock given is on %s, not on the pin dir %s", l.Dir(), d.pinDir)
	}
	return nil
}

// load loads the program and its maps, taking the pinned maps over when
// pinned.
func (d *Dispatcher) load(spec *ebpf.CollectionSpec, pinned bool) error {
	var copts ebpf.CollectionOptions
	if pinned {
		if err := d.checkPinned(); err != nil {
			return err
		}
		if err := d.checkPinnedCapacity(spec); err != nil {
			return err
		}
		for _, name := range pinnedMaps() {
			spec.Maps[name].Pinning = ebpf.PinByName
		}
		copts.Maps.PinPath = d.pinDir
	}
	objs := new(bpf.DispatchObjects)
	if err := spec.LoadAndAssign(objs, &copts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return fmt.Errorf("%w: %s holds maps of another layout (run `edgeproxy unload`): %v", ErrForeign, d.pinDir, err)
		}
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("load dispatch program: %+v", verr)
		}
		return fmt.Errorf("load dispatch program: %w", err)
	}
	d.objs = objs
	return nil
}

// readState reads what the maps hold: it marks them as ours when they are
// new, and reads the labels, the active generation and both generations.
func (d *Dispatcher) readState() error {
	objs := d.objs
	var m bpf.DispatchMeta
	if err := objs.Meta.Lookup(uint32(0), &m); err != nil {
		return fmt.Errorf("read meta: %w", err)
	}
	if m.Magic == 0 {
		m = bpf.DispatchMeta{Magic: metaMagic, Schema: d.schema}
		if err := objs.Meta.Put(uint32(0), &m); err != nil {
			return fmt.Errorf("write meta: %w", err)
		}
	}
	if err := d.readLabels(); err != nil {
		return err
	}
	var st bpf.DispatchState
	if err := objs.State.Lookup(uint32(0), &st); err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	d.active = st.Gen & 1
	for gen := range d.written {
		var err error
		if d.written[gen], err = d.readGen(uint8(gen)); err != nil {
			return err
		}
	}
	return nil
}

// pinnedMaps returns the names of the maps that outlive the process with
// PinDir set: every map of the object but its data sections (.rodata).
var pinnedMaps = sync.OnceValue(func() []string {
	spec, err := bpf.LoadDispatch()
	if err != nil {
		panic(fmt.Sprintf("dispatch: the embedded object does not load: %v", err))
	}
	var names []string
	for name := range spec.Maps {
		if !strings.HasPrefix(name, ".") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
})

// checkPinned inspects the pin directory before anything is loaded from it:
// only our names may be there, and the meta map must carry our magic and
// schema version.
func (d *Dispatcher) checkPinned() error {
	des, err := os.ReadDir(d.pinDir)
	if err != nil {
		return fmt.Errorf("read pin dir: %w", err)
	}
	if len(des) == 0 {
		return nil
	}
	if unknown := foreignPins(des); len(unknown) > 0 {
		return fmt.Errorf("%w: %s holds %s", ErrForeign, d.pinDir, strings.Join(unknown, ", "))
	}
	path := filepath.Join(d.pinDir, bpf.DispatchMapMeta)
	m, err := readPinnedMeta(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s has pinned objects but no meta map (run `edgeproxy unload`)", ErrForeign, d.pinDir)
	case err != nil:
		return err
	}
	switch {
	case m.Magic == 0:
		return nil // created but never written: ours, half-way through a first start
	case m.Magic != metaMagic:
		return fmt.Errorf("%w: %s has magic %#x", ErrForeign, path, m.Magic)
	case m.Schema != d.schema:
		return fmt.Errorf("%w: %s has schema %d, this binary speaks %d (run `edgeproxy unload`, which opens bound prefixes to the kernel until the next start)",
			ErrStale, d.pinDir, m.Schema, d.schema)
	}
	return nil
}

// checkPinnedCapacity refuses pinned maps made for another binding
// capacity than this dispatcher's, naming both: they cannot be resized, and
// taking them over would fail as maps of another layout.
func (d *Dispatcher) checkPinnedCapacity(spec *ebpf.CollectionSpec) error {
	path := filepath.Join(d.pinDir, bpf.DispatchMapBind4)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return nil // none pinned yet; anything else, loading reports
	}
	defer m.Close()
	if got, want := m.MaxEntries(), spec.Maps[bpf.DispatchMapBind4].MaxEntries; got != want {
		return fmt.Errorf("%w: %s holds maps made for a binding capacity of %d, this process asks %d: a live upgrade changes it, or `edgeproxy unload` first",
			ErrForeign, d.pinDir, got/2, want/2)
	}
	return nil
}

// foreignPins returns the names in a pin dir's entries that edgeproxy does
// not pin: directories, and names that are not the link's or a map's.
func foreignPins(des []os.DirEntry) []string {
	var unknown []string
	for _, de := range des {
		if de.IsDir() || (de.Name() != linkPin && !slices.Contains(pinnedMaps(), de.Name())) {
			unknown = append(unknown, de.Name())
		}
	}
	return unknown
}

// readPinnedMeta reads the meta map pinned at path. A map that is there
// but not a meta map is ErrForeign; none there is os.ErrNotExist.
func readPinnedMeta(path string) (bpf.DispatchMeta, error) {
	var m bpf.DispatchMeta
	mm, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return m, err
	}
	if err != nil {
		return m, fmt.Errorf("%w: open %s: %v", ErrForeign, path, err)
	}
	defer mm.Close()
	if mm.ValueSize() != metaSize {
		return m, fmt.Errorf("%w: %s is not a meta map", ErrForeign, path)
	}
	if err := mm.Lookup(uint32(0), &m); err != nil {
		return m, fmt.Errorf("%w: read %s: %v", ErrForeign, path, err)
	}
	return m, nil
}

// loadPinnedLink takes over a pinned link, after checking that it is ours and
// attached to the namespace we run in.
func (d *Dispatcher) loadPinnedLink() error {
	path := filepath.Join(d.pinDir, linkPin)
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: load %s: %v", ErrForeign, path, err)
	}
	nl, err := ourLink(l, path)
	if err != nil {
		return err
	}
	d.link = nl
	return nil
}

// ourLink checks that l, named what in errors, is a network namespace
// link running our program in this thread's namespace; otherwise it
// closes l and says why.
func ourLink(l link.Link, what string) (*link.NetNsLink, error) {
	nl, ok := l.(*link.NetNsLink)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("%w: %s is a %T, not a network namespace link", ErrForeign, what, l)
	}
	info, err := nl.Info()
	if err != nil {
		nl.Close()
		return nil, fmt.Errorf("link info of %s: %w", what, err)
	}
	if name, err := programNameByID(info.Program); err != nil {
		nl.Close()
		return nil, err
	} else if !strings.HasPrefix(programName, name) || len(name) < 15 {
		nl.Close()
		return nil, fmt.Errorf("%w: %s runs program %q", ErrForeign, what, name)
	}
	ino, err := netnsInode()
	if err != nil {
		nl.Close()
		return nil, err
	}
	if ns := info.NetNs(); ns == nil || uint64(ns.NetnsInode) != ino {
		nl.Close()
		return nil, fmt.Errorf("%s is attached to another network namespace than this thread's (inode %d): run in that namespace or `edgeproxy unload`", what, ino)
	}
	return nl, nil
}

func programNameByID(id ebpf.ProgramID) (string, error) {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return "", fmt.Errorf("open program %d: %w", id, err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return "", fmt.Errorf("program %d info: %w", id, err)
	}
	return info.Name, nil
}

// netnsPath is the network namespace of the calling thread.
const netnsPath = "/proc/thread-self/ns/net"

func netnsInode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(netnsPath, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", netnsPath, err)
	}
	return st.Ino, nil
}

// Attach attaches the program to the network namespace of the calling thread,
// or, when pinned state was taken over, swaps it into the pinned link in one
// step. It refuses when another sk_lookup program is attached there.
func (d *Dispatcher) Attach() error { return d.change(d.attach) }

// attach is Attach with mu held and objs in use.
func (d *Dispatcher) attach(objs *bpf.DispatchObjects) error {
	if d.link != nil {
		if d.handed {
			return d.swapInLocked(objs)
		}
		if err := d.link.Update(objs.EdgeproxyDispatch); err != nil {
			return fmt.Errorf("swap program into pinned link: %w", err)
		}
		return nil
	}
	ns, err := os.Open(netnsPath)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer ns.Close()
	if err := checkAttached(int(ns.Fd())); err != nil {
		return err
	}
	l, err := link.AttachNetNs(int(ns.Fd()), objs.EdgeproxyDispatch)
	if err != nil {
		return fmt.Errorf("attach to network namespace: %w", err)
	}
	if d.pinDir != "" {
		if err := l.Pin(filepath.Join(d.pinDir, linkPin)); err != nil {
			l.Close()
			return fmt.Errorf("pin link: %w", err)
		}
	}
	d.link = l
	return nil
}

// checkAttached refuses to attach beside another sk_lookup program: two
// dispatchers in one namespace would fight over every lookup.
func checkAttached(nsfd int) error {
	res, err := link.QueryPrograms(link.QueryOptions{Target: nsfd, Attach: ebpf.AttachSkLookup})
	if err != nil {
		return nil // the query is an aid; attaching reports real problems
	}
	if len(res.Programs) == 0 {
		return nil
	}
	p := res.Programs[0]
	name, err := programNameByID(p.ID)
	if err != nil {
		name = "?"
	}
	return fmt.Errorf("%w: sk_lookup program %d (%q) is already attached to this network namespace", ErrForeign, p.ID, name)
}

// Close releases the dispatcher. Unpinned, the program is detached and the
// kernel's normal socket lookup decides again. Pinned, the program and maps
// stay: bound prefixes stay closed until the next process registers sockets.
func (d *Dispatcher) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.quiesced != nil {
		<-d.quiesced
	}
	d.life.Lock()
	defer d.life.Unlock()
	return d.closeLocked()
}

// use returns the objects for use until done is called, or ErrClosed.
func (d *Dispatcher) use() (objs *bpf.DispatchObjects, done func(), err error) {
	d.life.RLock()
	if d.objs == nil {
		d.life.RUnlock()
		return nil, nil, ErrClosed
	}
	return d.objs, d.life.RUnlock, nil
}

// change runs fn with mu held and the objects in use: the start of every
// method that changes the data plane. It returns ErrClosed once closed.
func (d *Dispatcher) change(fn func(objs *bpf.DispatchObjects) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	objs, done, err := d.use()
	if err != nil {
		return err
	}
	defer done()
	return fn(objs)
}

// closeLocked releases everything; the caller holds mu and life, or is Open.
func (d *Dispatcher) closeLocked() error {
	var errs []error
	if d.link != nil {
		errs = append(errs, d.link.Close())
		d.link = nil
	}
	if d.objs != nil {
		errs = append(errs, d.objs.Close())
		d.objs = nil
	}
	if d.lock != nil {
		errs = append(errs, d.lock.Close())
		d.lock = nil
	}
	return errors.Join(errs...)
}

// ErrNothingPinned reports a pin directory with no pinned state in it: it
// does not exist, or it is an empty directory of a bpf filesystem.
var ErrNothingPinned = errors.New("no pinned edgeproxy state")

// Unload removes pinned state from pinDir: the program is detached and the
// kernel's normal lookup decides for every address again. It acts only on a
// directory of a bpf filesystem that holds edgeproxy's pins and nothing else,
// and only while no process holds the pin dir's lock: otherwise it removes
// nothing and says why (ErrForeign, ErrLocked). No state there is
// ErrNothingPinned.
func Unload(pinDir string) error {
	if pinDir == "" {
		return errors.New("unload: no pin dir")
	}
	pinDir = filepath.Clean(pinDir)
	fi, err := os.Lstat(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s does not exist", ErrNothingPinned, pinDir)
	}
	if err != nil {
		return fmt.Errorf("unload: %w", err)
	}
	if !fi.IsDir() || !isBPFFS(pinDir) {
		return fmt.Errorf("%w: %s is not a directory on a bpf filesystem, so it holds no pinned state: nothing to unload, nothing removed", ErrForeign, pinDir)
	}
	f, err := os.Open(pinDir)
	if err != nil {
		return fmt.Errorf("unload: %w", err)
	}
	defer f.Close() // releases the lock, after the directory is gone
	if err := flock(f, pinDir); err != nil {
		return err
	}
	if err := checkUnloadable(pinDir); err != nil {
		return err
	}
	var errs []error
	path := filepath.Join(pinDir, linkPin)
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		errs = append(errs, l.Unpin(), l.Close())
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("load %s: %w", path, err))
	}
	for _, name := range pinnedMaps() {
		if err := os.Remove(filepath.Join(pinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkUnloadable says whether the bpf filesystem directory dir holds
// edgeproxy's pins and nothing else: only our names, no directories, and
// either a meta map with our magic (of any schema version: a stale state
// must be removable) or, before the first start wrote it, maps of our
// layout.
func checkUnloadable(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("unload: %w", err)
	}
	if len(des) == 0 {
		return fmt.Errorf("%w: %s is empty", ErrNothingPinned, dir)
	}
	if unknown := foreignPins(des); len(unknown) > 0 {
		return fmt.Errorf("%w: %s holds %s, which edgeproxy does not pin: nothing removed", ErrForeign, dir, strings.Join(unknown, ", "))
	}
	if m, err := readPinnedMeta(filepath.Join(dir, bpf.DispatchMapMeta)); err == nil {
		if m.Magic == metaMagic {
			return nil
		}
		if m.Magic != 0 {
			return fmt.Errorf("%w: %s has magic %#x: nothing removed", ErrForeign, filepath.Join(dir, bpf.DispatchMapMeta), m.Magic)
		}
	}
	return checkLayout(dir, des)
}

// checkLayout says whether the maps pinned in dir, which holds no meta map
// of ours, are of our layout: a first start that stopped before it wrote
// the meta map.
func checkLayout(dir string, des []os.DirEntry) error {
	spec, err := bpf.LoadDispatch()
	if err != nil {
		return fmt.Errorf("load dispatch spec: %w", err)
	}
	if len(des) == 1 && des[0].Name() == linkPin {
		return fmt.Errorf("%w: %s holds a link but none of edgeproxy's maps: nothing removed", ErrForeign, dir)
	}
	for _, de := range des {
		if de.Name() == linkPin {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, de.Name()), nil)
		if err != nil {
			return fmt.Errorf("%w: %s: %v: nothing removed", ErrForeign, filepath.Join(dir, de.Name()), err)
		}
		ms := spec.Maps[de.Name()].Copy()
		if slices.Contains(capacityMaps, de.Name()) {
			ms.MaxEntries = m.MaxEntries() // made for any binding capacity
		}
		err = ms.Compatible(m)
		m.Close()
		if err != nil {
			return fmt.Errorf("%w: %s is not edgeproxy's map: %v: nothing removed", ErrForeign, filepath.Join(dir, de.Name()), err)
		}
	}
	return nil
}

// ensureBPFFS makes sure dir is, or will be, on a bpf filesystem, mounting
// one on /sys/fs/bpf when dir is below it and nothing is mounted there.
func ensureBPFFS(dir string) error {
	dir = filepath.Clean(dir)
	existing := dir
	for {
		if _, err := os.Stat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		existing = parent
	}
	if isBPFFS(existing) {
		return nil
	}
	const root = "/sys/fs/bpf"
	if dir == root || strings.HasPrefix(dir, root+"/") {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", root, err)
		}
		if isBPFFS(root) {
			return nil
		}
		if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpf filesystem on %s: %w", root, err)
		}
		return nil
	}
	return fmt.Errorf("pin dir %s is not on a bpf filesystem: mount one (mount -t bpf bpf DIR) or use a directory below /sys/fs/bpf", dir)
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}
