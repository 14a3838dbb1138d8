//go:build linux

package dispatch

import (
	"fmt"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// LabelCounters count the program's decisions for one label, summed over CPUs.
type LabelCounters struct {
	Lookups uint64 // the table chose this label
	Misses  uint64 // ... and no socket was registered: dropped
	Errors  uint64 // ... and the socket did not fit the packet: dropped
}

// Verdicts count the program's runs by outcome, summed over CPUs.
type Verdicts struct {
	NoMatch uint64 // outside every binding: the kernel decided
	Pass    uint64 // owned by a pass owner (magic transit): the kernel decided
	Refuse  uint64 // the owner does not serve the port: dropped
	Steer   uint64 // assigned to a registered socket
	Fail    uint64 // a label without socket, or a socket that did not fit: dropped
}

// Counters returns the counters of every label the dispatcher knows.
func (d *Dispatcher) Counters() (map[string]LabelCounters, error) {
	objs, done, err := d.use()
	if err != nil {
		return nil, err
	}
	defer done()
	labels := *d.labels.Load()
	out := make(map[string]LabelCounters, len(labels))
	for name, idx := range labels {
		var percpu []bpf.DispatchLabelCounters
		if err := objs.Counters.Lookup(idx, &percpu); err != nil {
			return nil, fmt.Errorf("read counters of %s: %w", name, err)
		}
		var sum LabelCounters
		for _, c := range percpu {
			sum.Lookups += c.Lookups
			sum.Misses += c.Misses
			sum.Errors += c.Errors
		}
		out[name] = sum
	}
	return out, nil
}

// Verdicts returns the program's outcome counters.
func (d *Dispatcher) Verdicts() (Verdicts, error) {
	objs, done, err := d.use()
	if err != nil {
		return Verdicts{}, err
	}
	defer done()
	var sums [bpf.DispatchVerdictV_MAX]uint64
	for i := range sums {
		var percpu []uint64
		if err := objs.Verdicts.Lookup(uint32(i), &percpu); err != nil {
			return Verdicts{}, fmt.Errorf("read verdict counters: %w", err)
		}
		for _, n := range percpu {
			sums[i] += n
		}
	}
	return Verdicts{
		NoMatch: sums[bpf.DispatchVerdictV_NO_MATCH],
		Pass:    sums[bpf.DispatchVerdictV_PASS],
		Refuse:  sums[bpf.DispatchVerdictV_REFUSE],
		Steer:   sums[bpf.DispatchVerdictV_STEER],
		Fail:    sums[bpf.DispatchVerdictV_FAIL],
	}, nil
}
