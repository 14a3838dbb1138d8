//go:build linux

package dispatch

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// skLookup mirrors the kernel's struct bpf_sk_lookup, the context of
// BPF_PROG_TEST_RUN for sk_lookup programs.
type skLookup struct {
	Cookie         uint64
	Family         uint32
	Protocol       uint32
	RemoteIP4      uint32
	RemoteIP6      [4]uint32
	RemotePort     uint16 // network byte order
	_              uint16
	LocalIP4       uint32
	LocalIP6       [4]uint32
	LocalPort      uint32 // host byte order
	IngressIfindex uint32
	_              uint32 // the kernel's struct is padded to 8 bytes
}

// Return codes of sk_lookup programs.
const (
	skDrop = 0
	skPass = 1
)

// Probe runs the loaded program once, with BPF_PROG_TEST_RUN, on a packet
// of protocol p to dst and returns its verdict. A steered verdict names the
// label whose registered socket the program chose; a label without a socket
// shows as Refuse, as the program drops it. Probes count in the counters
// like real lookups. Sockets in an SO_REUSEPORT group cannot be probed (the
// kernel refuses with EOPNOTSUPP).
func (d *Dispatcher) Probe(p Protocol, dst netip.AddrPort) (Verdict, error) {
	objs, done, err := d.use()
	if err != nil {
		return Verdict{}, err
	}
	defer done()

	ctx := skLookup{
		Protocol:   uint32(p),
		RemotePort: 0x3930, // 12345 in network byte order
		LocalPort:  uint32(dst.Port()),
	}
	addr := dst.Addr().Unmap()
	if addr.Is4() {
		ctx.Family = unix.AF_INET
		ctx.LocalIP4 = ip4(addr)
		ctx.RemoteIP4 = ip4(netip.AddrFrom4([4]byte{127, 0, 0, 2}))
	} else {
		ctx.Family = unix.AF_INET6
		ctx.LocalIP6 = ip6(addr)
		ctx.RemoteIP6 = ip6(netip.IPv6Loopback())
	}
	var out skLookup
	// The run may overlap a Replace, like real traffic.
	ret, err := objs.EdgeproxyDispatch.Run(&ebpf.RunOptions{Context: ctx, ContextOut: &out})
	if err != nil {
		return Verdict{}, fmt.Errorf("probe %s %s: %w", p, dst, err)
	}
	switch {
	case ret == skDrop:
		return Verdict{Action: Refuse}, nil
	case out.Cookie == 0:
		return Verdict{Action: Kernel}, nil
	}
	for name := range *d.labels.Load() {
		if c, ok := d.cookie(objs, name); ok && c == out.Cookie {
			return Verdict{Action: Steer, Label: name}, nil
		}
	}
	return Verdict{}, fmt.Errorf("probe %s %s: the program chose socket cookie %d, which no label holds", p, dst, out.Cookie)
}
