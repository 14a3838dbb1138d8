//go:build linux

package dispatch

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// Replace makes t the table the program steers by, atomically from the
// traffic's point of view: t is written into the generation the program does
// not read, and one store to the state map switches the program over. A lookup
// sees the old table or the new one, never a mix. Only the difference to what
// that generation held is written, in batches.
//
// On error nothing changes for traffic: the active table stays as it was.
func (d *Dispatcher) Replace(t *Table) error {
	if err := t.Validate(); err != nil {
		return err
	}
	return d.change(func(objs *bpf.DispatchObjects) error {
		next, err := compile(t, d.labelIndex)
		if err != nil {
			return err
		}
		if err := d.checkLimits(next); err != nil {
			return err
		}
		return d.switchTo(objs, next)
	})
}

// switchTo writes next into the generation the program does not read and
// flips to it. The caller holds mu and uses objs.
func (d *Dispatcher) switchTo(objs *bpf.DispatchObjects, next *entries) error {
	// Programs that read the inactive generation before the last flip must
	// be done before we write into it.
	if d.quiesced != nil {
		<-d.quiesced
		d.quiesced = nil
	}
	gen := 1 - d.active
	if d.dirty[gen] {
		var err error
		if d.written[gen], err = d.readGen(uint8(gen)); err != nil {
			return err
		}
		d.dirty[gen] = false
	}
	added, err := d.slots.place(objs, uint8(gen), d.written[gen], next)
	if err != nil {
		return err
	}
	if err := d.writeGen(uint8(gen), d.written[gen], next); err != nil {
		d.dirty[gen] = true
		d.slots.release(added)
		return err
	}
	d.slots.wrote(uint8(gen), d.written[gen], next)
	d.written[gen] = next

	// Critical section: from this store on, every lookup uses the new table.
	if err := objs.State.Put(uint32(0), &bpf.DispatchState{Gen: gen}); err != nil {
		return fmt.Errorf("switch generation: %w", err)
	}
	d.active = gen
	d.slots.switched(uint8(gen))

	d.quiesced = readersDone()
	return nil
}

// checkBindings refuses a table of n4 IPv4 and n6 IPv6 bindings beyond the
// binding capacity.
func (d *Dispatcher) checkBindings(n4, n6 int) error {
	if n4+n6 > d.limits.bind {
		return fmt.Errorf("%w: %w: %d bindings (%d IPv4, %d IPv6) exceed the binding capacity of %d", ErrInvalidTable, ErrCapacity,
			n4+n6, n4, n6, d.limits.bind)
	}
	return nil
}

func (d *Dispatcher) checkLimits(e *entries) error {
	if err := d.checkBindings(len(e.bind4), len(e.bind6)); err != nil {
		return err
	}
	switch {
	case len(e.app4) > d.limits.apps:
		return fmt.Errorf("%w: %d IPv4 app entries exceed the capacity of %d", ErrInvalidTable, len(e.app4), d.limits.apps)
	case len(e.app6) > d.limits.apps:
		return fmt.Errorf("%w: %d IPv6 app entries exceed the capacity of %d", ErrInvalidTable, len(e.app6), d.limits.apps)
	case len(e.ports) > d.limits.ports:
		return fmt.Errorf("%w: %d port entries exceed the capacity of %d", ErrInvalidTable, len(e.ports), d.limits.ports)
	}
	return nil
}

// readersDone returns a channel that is closed once every program run that
// started before the call has finished.
func readersDone() chan struct{} {
	done := make(chan struct{})
	go func() {
		waitForReaders()
		close(done)
	}()
	return done
}

// waitForReaders returns once every program run that started before the call
// has finished. sk_lookup programs run inside RCU read-side sections, and
// membarrier(MEMBARRIER_CMD_GLOBAL) waits for an RCU grace period.
func waitForReaders() {
	const membarrierCmdGlobal = 1
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
		// Not available (nohz_full CPUs): a program run takes microseconds.
		time.Sleep(50 * time.Millisecond)
	}
}

// writeGen turns generation gen from old into next.
func (d *Dispatcher) writeGen(gen uint8, old, next *entries) error {
	o := d.objs
	if err := syncMap(o.Bind4, gen, bind4Gen, old.bind4, next.bind4, cmpBind4); err != nil {
		return fmt.Errorf("write bind4: %w", err)
	}
	if err := syncMap(o.Bind6, gen, bind6Gen, old.bind6, next.bind6, cmpBind6); err != nil {
		return fmt.Errorf("write bind6: %w", err)
	}
	if err := syncMap(o.App4, gen, app4Gen, old.app4, next.app4, cmpApp4); err != nil {
		return fmt.Errorf("write app4: %w", err)
	}
	if err := syncMap(o.App6, gen, app6Gen, old.app6, next.app6, cmpApp6); err != nil {
		return fmt.Errorf("write app6: %w", err)
	}
	if err := syncMap(o.Ports, gen, portGen, old.ports, next.ports, nil); err != nil {
		return fmt.Errorf("write ports: %w", err)
	}
	if err := syncArray(o.Portinfo, old.portinfo, next.portinfo, portinfoBase(gen)); err != nil {
		return fmt.Errorf("write portinfo: %w", err)
	}
	if err := syncArray(o.Owners, old.owners, next.owners, ownersBase(gen)); err != nil {
		return fmt.Errorf("write owners: %w", err)
	}
	return nil
}

// readGen reads generation gen back from the maps: after a takeover, or when
// a write failed half-way.
func (d *Dispatcher) readGen(gen uint8) (*entries, error) {
	o, e := d.objs, newEntries()
	for _, r := range []struct {
		name string
		read func() error
	}{
		{"bind4", func() error { return readGenMap(o.Bind4, gen, bind4Gen, e.bind4) }},
		{"bind6", func() error { return readGenMap(o.Bind6, gen, bind6Gen, e.bind6) }},
		{"app4", func() error { return readGenMap(o.App4, gen, app4Gen, e.app4) }},
		{"app6", func() error { return readGenMap(o.App6, gen, app6Gen, e.app6) }},
		{"ports", func() error { return readGenMap(o.Ports, gen, portGen, e.ports) }},
		{"portinfo", func() error { return readGenArray(o.Portinfo, portinfoBase(gen), portinfoSlots, e.portinfo) }},
		{"owners", func() error { return readGenArray(o.Owners, ownersBase(gen), ownerSlots, e.owners) }},
	} {
		if err := r.read(); err != nil {
			return nil, fmt.Errorf("read %s: %w", r.name, err)
		}
	}
	e.countPortScoped()
	return e, nil
}

// The generation byte of the keys of each map that has one.
func bind4Gen(k *bpf.DispatchBind4Key) *uint8 { return &k.Gen }
func bind6Gen(k *bpf.DispatchBind6Key) *uint8 { return &k.Gen }
func app4Gen(k *bpf.DispatchApp4Key) *uint8   { return &k.Gen }
func app6Gen(k *bpf.DispatchApp6Key) *uint8   { return &k.Gen }
func portGen(k *bpf.DispatchPortKey) *uint8   { return &k.Gen }
