//go:build linux

package dispatch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// A live upgrade hands the data plane from one process to the next without
// a moment in which a bound prefix is open to the host or closed: the new
// process loads a program and maps of its own (its binary's layout, which
// may differ from the running one's), fills them and registers its sockets
// in them while the running program steers every packet, then swaps its
// program into the running link in one step (Attach). The old process keeps
// its objects until it exits, so it can take the link back (Reclaim) as
// long as the new one has not reported ready.

// LinkFile returns a new descriptor of the attached link, to hand to the
// process that takes over (Options.Link); the caller closes it. The link
// stays attached while any descriptor of it is open, so the handover works
// unpinned too.
func (d *Dispatcher) LinkFile() (*os.File, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.link == nil {
		return nil, errors.New("dispatch: no link attached to hand on")
	}
	fd, err := unix.FcntlInt(uintptr(d.link.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dispatch: duplicate the link: %w", err)
	}
	return os.NewFile(uintptr(fd), "edgeproxy-link"), nil
}

// adoptLink takes up the link whose descriptor a running process handed
// down, after checking that it is an sk_lookup link running our program in
// this thread's network namespace. f stays the caller's.
func (d *Dispatcher) adoptLink(f *os.File) error {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("dispatch: the link handed down: %w", err)
	}
	l, err := link.NewFromFD(fd)
	if err != nil {
		return fmt.Errorf("dispatch: the descriptor handed down is not a link: %w", err)
	}
	nl, err := ourLink(l, "the link handed down")
	if err != nil {
		return err
	}
	d.link, d.handed = nl, true
	return nil
}

// Reclaim swaps this dispatcher's program back into the link and its maps
// back into the pins: the rollback of a handover whose new process failed
// after its Attach. Before that Attach it changes nothing that was not
// this dispatcher's already.
func (d *Dispatcher) Reclaim() error { return d.change(d.reclaim) }

// reclaim is Reclaim with mu held and objs in use.
func (d *Dispatcher) reclaim(objs *bpf.DispatchObjects) error {
	if d.link == nil {
		return errors.New("dispatch: reclaim: not attached")
	}
	return d.swapInLocked(objs)
}

// swapInLocked makes objs' program the link's, then (pinned) makes the pin
// dir name objs' maps, removing pins of maps this layout does not have.
// The swap is the one step that moves the data plane; the pins follow it,
// and only a process that opens the pin dir later reads them.
func (d *Dispatcher) swapInLocked(objs *bpf.DispatchObjects) error {
	if err := d.link.Update(objs.EdgeproxyDispatch); err != nil {
		return fmt.Errorf("swap program into the link: %w", err)
	}
	if d.pinDir == "" {
		return nil
	}
	if err := d.pinMapsLocked(objs); err != nil {
		return fmt.Errorf("the program is swapped in, but its maps' pins are not: %w", err)
	}
	return nil
}

// pinMapsLocked replaces the pin of every map in objs by objs' map.
func (d *Dispatcher) pinMapsLocked(objs *bpf.DispatchObjects) error {
	mine := objectMaps(objs)
	var errs []error
	for name, m := range mine {
		path := filepath.Join(d.pinDir, name)
		if m.IsPinned() {
			// Its pin may name another process's map by now: Unpin
			// removes whatever is at the path, and Pin names ours.
			if err := m.Unpin(); err != nil {
				errs = append(errs, err)
				continue
			}
		} else if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		if err := m.Pin(path); err != nil {
			errs = append(errs, fmt.Errorf("pin %s: %w", name, err))
		}
	}
	des, err := os.ReadDir(d.pinDir)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, de := range des {
		if _, ok := mine[de.Name()]; ok || de.Name() == linkPin || de.IsDir() {
			continue
		}
		// A map of another layout's, whose program no longer runs.
		if err := os.Remove(filepath.Join(d.pinDir, de.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// objectMaps returns objs' maps by their names in the object.
func objectMaps(objs *bpf.DispatchObjects) map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	v := reflect.ValueOf(&objs.DispatchMaps).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Tag.Get("ebpf")
		if m, ok := v.Field(i).Interface().(*ebpf.Map); ok && m != nil && slices.Contains(pinnedMaps(), name) {
			out[name] = m
		}
	}
	return out
}
