package spectrum

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
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
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hs[0])), uintptr(len(b.hs)),
			unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			return int(n), nil
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
	n    int
}

func newSendBatch(n int) *sendBatch {
	b := &sendBatch{hs: make([]unix.Mmsghdr, n), iovs: make([][2]unix.Iovec, n), hdrs: make([][sppHeaderLen]byte, n)}
	for i := range n {
		b.hs[i].Hdr.Iov = &b.iovs[i][0]
	}
	return b
}

// header returns the scratch for the next datagram's header.
func (b *sendBatch) header() []byte { return b.hdrs[b.n][:0] }

// add queues a datagram of header then payload; the batch must have room.
// Both must stay unchanged until send.
func (b *sendBatch) add(header, payload []byte) {
	iov := &b.iovs[b.n]
	k := 0
	for _, part := range [2][]byte{header, payload} {
		if len(part) > 0 {
			iov[k].Base = &part[0]
			iov[k].SetLen(len(part))
			k++
		}
	}
	b.hs[b.n].Hdr.SetIovlen(k)
	b.n++
}

func (b *sendBatch) full() bool { return b.n == len(b.hs) }

// send sends the queued datagrams on rc, waiting for room if the socket
// has none, and empties the batch. A datagram the kernel refuses is
// skipped: failed is called with its index and the error, and the rest
// are still sent. It returns the index of the first datagram not tried:
// all of them but on rc's error (closed).
func (b *sendBatch) send(rc syscall.RawConn, failed func(i int, err error)) (int, error) {
	n := b.n
	b.n = 0
	next := 0
	for next < n {
		var serr error
		err := rc.Write(func(fd uintptr) bool {
			for next < n {
				m, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hs[next])), uintptr(n-next), 0, 0, 0)
				switch e {
				case 0:
					next += int(m)
					continue
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false
				}
				serr = e
				return true
			}
			return true
		})
		if err != nil {
			return next, err
		}
		if serr != nil {
			failed(next, serr)
			next++
		}
	}
	return next, nil
}
