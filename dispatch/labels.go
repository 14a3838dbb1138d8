//go:build linux

package dispatch

import (
	"bytes"
	"fmt"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// the maps keep their meaning.
func (d *Dispatcher) readLabels() error {
	labels := map[string]uint32{}
	err := readMap(d.objs.Labels, func(idx uint32, v bpf.DispatchLabelName) {
		if name := labelString(v); name != "" {
			labels[name] = idx
		}
	})
	d.labels.Store(&labels)
	return err
}

// labelOf returns the index of a known label.
func (d *Dispatcher) labelOf(name string) (uint32, bool) {
	idx, ok := (*d.labels.Load())[name]
	return idx, ok
}

func labelString(v bpf.DispatchLabelName) string {
	b := make([]byte, 0, len(v.Name))
	for _, c := range v.Name {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(bytes.TrimSpace(b))
}

// labelIndex returns the index of a label, allocating one for a new name.
// The caller holds d.mu and uses the objects.
func (d *Dispatcher) labelIndex(name string) (uint32, error) {
	labels := *d.labels.Load()
	if idx, ok := labels[name]; ok {
		return idx, nil
	}
	if err := CheckLabel(name); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidTable, err)
	}
	used := make(map[uint32]bool, len(labels))
	for _, idx := range labels {
		used[idx] = true
	}
	for idx := uint32(0); idx < MaxLabels; idx++ {
		if used[idx] {
			continue
		}
		var v bpf.DispatchLabelName
		for i := range len(name) {
			v.Name[i] = int8(name[i])
		}
		if err := d.objs.Labels.Put(idx, &v); err != nil {
			return 0, fmt.Errorf("write label %q: %w", name, err)
		}
		next := make(map[string]uint32, len(labels)+1)
		for k, v := range labels {
			next[k] = v
		}
		next[name] = idx
		d.labels.Store(&next)
		return idx, nil
	}
	return 0, fmt.Errorf("%w: more than %d labels", ErrInvalidTable, MaxLabels)
}
