package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/edgeproxy/edgeproxy/internal/rawsys"
)

// rawIO reads and writes a non-blocking TCP socket with raw system calls
// (internal/rawsys, which says why) under the runtime's poller
// (syscall.RawConn): the same reads and writes as net's, waiting in the
// poller when the socket is not ready. The calls are recvfrom and sendto,
// sendto with MSG_NOSIGNAL, so a peer that reset raises no SIGPIPE.
type rawIO struct {
	owner   *lazyConn // told before a read or write waits (its deadlines)
	rc      syscall.RawConn
	laddr   net.Addr
	raddr   net.Addr
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool

	rmu  sync.Mutex // one read at a time; guards rbuf, rn, rerr
	rbuf []byte
	rn   int
	rerr syscall.Errno

	wmu  sync.Mutex // one write at a time; guards wbuf, wn, werr
	wbuf []byte
	wn   int
	werr syscall.Errno
}

func (r *rawIO) init(tc socket, owner *lazyConn) {
	// A socket always has its raw connection; its addresses are fixed.
	r.rc, _ = tc.SyscallConn()
	r.laddr, r.raddr, r.owner = tc.LocalAddr(), tc.RemoteAddr(), owner
	r.readFn, r.writeFn = r.readOnce, r.writeAll
}

func (r *rawIO) readOnce(fd uintptr) bool {
	for {
		n, e := rawsys.Recv(fd, r.rbuf, 0)
		switch e {
		case 0:
			r.rn = n
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			if r.owner != nil {
				r.owner.waitRead()
			}
			return false // wait in the poller
		default:
			r.rerr = e
			return true
		}
	}
}

func (r *rawIO) writeAll(fd uintptr) bool {
	for r.wn < len(r.wbuf) {
		n, e := rawsys.Send(fd, r.wbuf[r.wn:], syscall.MSG_NOSIGNAL)
		switch e {
		case 0:
			r.wn += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			if r.owner != nil {
				r.owner.waitWrite()
			}
			return false // wait in the poller
		default:
			r.werr = e
			return true
		}
	}
	return true
}

func (r *rawIO) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.laddr, Addr: r.raddr, Err: err}
}

func (r *rawIO) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rmu.Lock()
	defer r.rmu.Unlock()
	r.rbuf, r.rn, r.rerr = p, 0, 0
	err := r.rc.Read(r.readFn)
	n, e := r.rn, r.rerr
	r.rbuf = nil
	switch {
	case err != nil: // a deadline, or closed
		return 0, r.opError("read", err)
	case e != 0:
		return 0, r.opError("read", os.NewSyscallError("recvfrom", e))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawIO) write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.wbuf, r.wn, r.werr = p, 0, 0
	err := r.rc.Write(r.writeFn)
	n, e := r.wn, r.werr
	r.wbuf = nil
	switch {
	case err != nil:
		return n, r.opError("write", err)
	case e != 0:
		return n, r.opError("write", os.NewSyscallError("sendto", e))
	}
	return n, nil
}
