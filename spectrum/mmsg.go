package spectrum

import (
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/rawsys"
)

// Datagram batches: recvmmsg and sendmmsg on connected UDP sockets, with
// their headers, iovecs and buffers allocated once per flow direction, so
// that a datagram costs no allocation and no address parsing (x/net's
// ReadBatch unpacks a source address into a new net.UDPAddr per datagram).

// recvBatch is where one recvmmsg puts its datagrams.
type recvBatch struct {
	hs   []unix.Mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
}

func newRecvBatch(n, size int) *recvBatch {
	b := &recvBatch{hs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n)}
	for i := range n {
		b.bufs[i] = make([]byte, size)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
		b.hs[i].Hdr.Iov = &b.iovs[i]
		b.hs[i].Hdr.SetIovlen(1)
	}
	return b
}

// recv reads up to a batch of datagrams without waiting.
func (b *recvBatch) recv(fd int) (int, error) {
	for {
		n, e := rawsys.RecvMmsg(uintptr(fd), b.hs, unix.MSG_DONTWAIT)
		switch e {
		case 0:
			return n, nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// datagram returns the i-th datagram read, and whether it was truncated.
func (b *recvBatch) datagram(i int) ([]byte, bool) {
	return b.bufs[i][:b.hs[i].Len], b.hs[i].Hdr.Flags&unix.MSG_TRUNC != 0
}

// sendBatch gathers datagrams for one sendmmsg, each from a header (maybe
// empty) and a payload, neither copied.
type sendBatch struct {
	hs   []unix.Mmsghdr
	iovs [][2]unix.Iovec
	hdrs [][sppHeaderLen]byte // header scratch, one per datagram
	one  [][]byte             // a datagram's only part, if it has one
	n    int                  // datagrams queued

	// send's state and results
	next   int
	serr   error
	failed []int
	errs   []error
	fn     func(uintptr) bool
}

func newSendBatch(n int) *sendBatch {
	b := &sendBatch{hs: make([]unix.Mmsghdr, n), iovs: make([][2]unix.Iovec, n), hdrs: make([][sppHeaderLen]byte, n), one: make([][]byte, n)}
	for i := range n {
		b.hs[i].Hdr.Iov = &b.iovs[i][0]
	}
	b.fn = b.sendmmsg
	return b
}

// header returns the scratch for the next datagram's header.
func (b *sendBatch) header() []byte { return b.hdrs[b.n][:0] }

// add queues a datagram of header then payload; the batch must have room.
// Both must stay unchanged until send.
func (b *sendBatch) add(header, payload []byte) {
	iov := &b.iovs[b.n]
	k := 0
	b.one[b.n] = nil
	for _, part := range [2][]byte{header, payload} {
		if len(part) > 0 {
			iov[k].Base = &part[0]
			iov[k].SetLen(len(part))
			b.one[b.n] = part
			k++
		}
	}
	if k != 1 {
		b.one[b.n] = nil
	}
	b.hs[b.n].Hdr.SetIovlen(k)
	b.n++
}

// send sends the queued datagrams on rc, waiting for room if the socket
// has none, and empties the batch. A datagram the kernel refuses is
// skipped (its index and error are left in failed and errs) and the rest
// are still sent. It returns the index of the first datagram not tried:
// all of them but on rc's error (closed).
func (b *sendBatch) send(rc syscall.RawConn) (int, error) {
	b.failed, b.errs = b.failed[:0], b.errs[:0]
	b.next = 0
	defer func() { b.n = 0 }()
	for b.next < b.n {
		b.serr = nil
		if err := rc.Write(b.fn); err != nil {
			return b.next, err
		}
		if b.serr != nil {
			b.failed = append(b.failed, b.next)
			b.errs = append(b.errs, b.serr)
			b.next++
		}
	}
	return b.next, nil
}

// sendmmsg is send's callback, made once per batch.
func (b *sendBatch) sendmmsg(fd uintptr) bool {
	for b.next < b.n {
		if b.next == b.n-1 && b.one[b.next] != nil {
			// One datagram of one part: write(2) skips the message
			// header's copy-in.
			_, err := rawsys.Send(fd, b.one[b.next], 0)
			switch err {
			case 0:
				b.next++
				continue
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			b.serr = err
			return true
		}
		m, e := rawsys.SendMmsg(fd, b.hs[b.next:b.n], 0)
		switch e {
		case 0:
			b.next += m
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		b.serr = e
		return true
	}
	return true
}

// sentBytes returns the bytes of the payloads sent of those given to the
// last send (payloads[i] the i-th datagram's), and how many were sent.
func (b *sendBatch) sentBytes(payloads [][]byte, next int) (bytes, sent int) {
	for i, pl := range payloads[:next] {
		if !slices.Contains(b.failed, i) {
			bytes += len(pl)
			sent++
		}
	}
	return bytes, sent
}
