package spectrum

import (
	"net"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestDatagramBatches: one sendmmsg sends a batch of datagrams (a header
// and a payload gathered, a payload alone, an empty one, one alone by
// write), and recvmmsg reads them back whole, in order, a truncated one
// flagged.
func TestDatagramBatches(t *testing.T) {
	netns.New(t)
	a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := net.DialUDP("udp4", nil, a.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// a connected back to b, so both are as a flow's sockets are.
	a.Close()
	if a, err = net.DialUDP("udp4", a.LocalAddr().(*net.UDPAddr), b.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	braw, _ := b.SyscallConn()
	araw, _ := a.SyscallConn()

	out := newSendBatch(4)
	out.add([]byte("head-"), []byte("payload"))
	out.add(nil, []byte("alone"))
	out.add(nil, nil)
	out.add(nil, make([]byte, 100)) // larger than the reader's buffers
	if next, err := out.send(braw); next != 4 || err != nil || len(out.failed) != 0 {
		t.Fatalf("send: %d tried, %v, failed %v", next, err, out.failed)
	}
	out.add(nil, []byte("by write"))
	if next, err := out.send(braw); next != 1 || err != nil {
		t.Fatalf("send one: %d, %v", next, err)
	}

	in := newRecvBatch(4, 64)
	want := []string{"head-payload", "alone", "", "", "by write"}
	var got []string
	var truncs []bool
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < len(want) {
		var n int
		var rerr error
		if err := araw.Read(func(fd uintptr) bool {
			n, rerr = in.recv(int(fd))
			return rerr == nil
		}); err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		for i := range n {
			d, trunc := in.datagram(i)
			if trunc {
				d = nil
			}
			got = append(got, string(d))
			truncs = append(truncs, trunc)
		}
	}
	for i := range want {
		if got[i] != want[i] || truncs[i] != (i == 3) {
			t.Errorf("datagram %d: %q (truncated %v), want %q", i, got[i], truncs[i], want[i])
		}
	}
}
