package proxy

import (
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
)

// sockConn is a client connection the cdn accepted with a raw accept4: a
// non-blocking socket that the runtime's poller does not know until a read
// or a write must wait on it. A new connection whose request arrives with
// it (TCP_DEFER_ACCEPT) and whose response fits the socket's buffer so
// costs no poller registration and removal (two epoll_ctl), no finalizer,
// no TCP_NODELAY (the socket inherits it from the cdn's socket), and none
// of the runtime's connection structs. The first time a read or write finds
// the socket not ready, or a deadline is set, the socket becomes an
// *os.File of the poller (os.NewFile, which takes the descriptor as it is),
// and every later wait and deadline is the runtime's.
//
// Until then, system calls on the descriptor are counted (state), and
// Close, which may come from another goroutine (a move, a shutdown), closes
// the descriptor only once none is in progress, so that no call can reach a
// descriptor the process has already reused for another file.
type sockConn struct {
	fd           int
	edge, client netip.AddrPort // local and remote, IPv4 unmapped
	laddr, raddr net.Addr

	// state counts the system calls in progress on fd outside the file;
	// sockClosed is set by Close.
	state atomic.Int64
	file  atomic.Pointer[sockFile] // once the socket waited or took a deadline
	mu    sync.Mutex               // held to make file and to close the descriptor
	once  sync.Once                // the descriptor's close

	fds *fdlimit.Budget // given one descriptor back when it closes, once it holds one
}

// sockFile is the poller's hold of a sockConn's socket.
type sockFile struct {
	f  *os.File
	rc syscall.RawConn
}

const sockClosed = 1 << 40

// acceptSock accepts a connection on the listening socket fd: false, with
// nothing accepted, when none is waiting (the caller waits in the poller).
// EINTR and connections aborted before they were accepted are retried.
func acceptSock(fd uintptr) (*sockConn, bool, error) {
	var rsa unix.RawSockaddrAny
	for {
		n := uint32(unix.SizeofSockaddrAny)
		nfd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, fd, uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
			syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
		case syscall.EINTR, syscall.ECONNABORTED:
			continue
		case syscall.EAGAIN:
			return nil, false, nil
		default:
			return nil, true, os.NewSyscallError("accept4", e)
		}
		c := &sockConn{fd: int(nfd), client: rawAddrPort(&rsa)}
		n = uint32(unix.SizeofSockaddrAny)
		if _, _, e := syscall.RawSyscall(syscall.SYS_GETSOCKNAME, nfd, uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n))); e != 0 {
			syscall.Close(int(nfd))
			if e == syscall.EINTR || e == syscall.ENOTCONN || e == syscall.EINVAL {
				continue // reset before we could look at it
			}
			return nil, true, os.NewSyscallError("getsockname", e)
		}
		c.edge = rawAddrPort(&rsa)
		c.laddr, c.raddr = net.TCPAddrFromAddrPort(c.edge), net.TCPAddrFromAddrPort(c.client)
		return c, true, nil
	}
}

// rawAddrPort is an IPv4 or IPv6 socket address, IPv4-mapped addresses as
// IPv4.
func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// begin counts a system call on fd outside the file; false once closed.
func (c *sockConn) begin() bool {
	for {
		s := c.state.Load()
		if s&sockClosed != 0 {
			return false
		}
		if c.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

// end ends what begin counted; the last call after Close closes fd.
func (c *sockConn) end() {
	if c.state.Add(-1) == sockClosed {
		c.closeFD()
	}
}

// closeFD closes the descriptor, once: through the file when there is one
// (which wakes its waiters), and gives it back to the budget.
func (c *sockConn) closeFD() {
	c.mu.Lock() // not while poller makes the file
	defer c.mu.Unlock()
	c.once.Do(func() {
		if sf := c.file.Load(); sf != nil {
			sf.f.Close()
		} else {
			// Not syscall.Close: a socket's close is short, and the
			// scheduler need not hear of it (rawIO).
			syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(c.fd), 0, 0)
		}
		if c.fds != nil {
			c.fds.Release(fdlimit.CDN, 1)
		}
	})
}

// poller gives the socket to the runtime's poller, once; net.ErrClosed
// after Close.
func (c *sockConn) poller() (*sockFile, error) {
	if sf := c.file.Load(); sf != nil {
		return sf, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if sf := c.file.Load(); sf != nil {
		return sf, nil
	}
	if c.state.Load()&sockClosed != 0 {
		return nil, net.ErrClosed
	}
	f := os.NewFile(uintptr(c.fd), "")
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	sf := &sockFile{f: f, rc: rc}
	c.file.Store(sf)
	return sf, nil
}

// closedErr is err, or net.ErrClosed when the connection was closed (the
// file's own error for it is not comparable).
func (c *sockConn) closedErr(err error) error {
	if err != nil && c.state.Load()&sockClosed != 0 {
		return net.ErrClosed
	}
	return err
}

// sockRaw is a sockConn's syscall.RawConn: the calls go to the descriptor
// at once, and to the poller's file only when they must wait.
type sockRaw struct{ c *sockConn }

func (r sockRaw) Control(f func(fd uintptr)) error {
	c := r.c
	if sf := c.file.Load(); sf != nil {
		return c.closedErr(sf.rc.Control(f))
	}
	if !c.begin() {
		return net.ErrClosed
	}
	f(uintptr(c.fd))
	c.end()
	return nil
}

func (r sockRaw) Read(f func(fd uintptr) bool) error  { return r.io(f, false) }
func (r sockRaw) Write(f func(fd uintptr) bool) error { return r.io(f, true) }

// io calls f on the descriptor; when f reports that it must wait, the
// socket goes to the poller, whose file calls f again and waits as net's
// connections do.
func (r sockRaw) io(f func(fd uintptr) bool, write bool) error {
	c := r.c
	sf := c.file.Load()
	if sf == nil {
		if !c.begin() {
			return net.ErrClosed
		}
		done := f(uintptr(c.fd))
		c.end()
		if done {
			return nil
		}
		var err error
		if sf, err = c.poller(); err != nil {
			return err
		}
	}
	var err error
	if write {
		err = sf.rc.Write(f)
	} else {
		err = sf.rc.Read(f)
	}
	return c.closedErr(err)
}

// SyscallConn is the connection's raw connection.
func (c *sockConn) SyscallConn() (syscall.RawConn, error) { return sockRaw{c}, nil }

// Read and Write are net.Conn's; the proxy reads and writes through a
// lazyConn's raw calls.
func (c *sockConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var e syscall.Errno
	err := sockRaw{c}.Read(func(fd uintptr) bool {
		for {
			m, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
			switch errno {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			n, e = int(m), errno
			return true
		}
	})
	if err == nil && e == 0 && n == 0 {
		return 0, io.EOF
	}
	return n, c.opError("read", err, e)
}

func (c *sockConn) Write(p []byte) (int, error) {
	done := 0
	var e syscall.Errno
	err := sockRaw{c}.Write(func(fd uintptr) bool {
		for done < len(p) {
			m, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done), syscall.MSG_NOSIGNAL, 0, 0)
			switch errno {
			case 0:
				done += int(m)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				e = errno
				return true
			}
		}
		return true
	})
	return done, c.opError("write", err, e)
}

// opError is a read's or write's error as net's: nil when there is none.
func (c *sockConn) opError(op string, err error, e syscall.Errno) error {
	switch {
	case err != nil:
	case e != 0:
		err = os.NewSyscallError(op, e)
	default:
		return nil
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// Close closes the connection: at once, or when the system call in
// progress on it ends. A read or write waiting in the poller is woken.
func (c *sockConn) Close() error {
	for {
		s := c.state.Load()
		if s&sockClosed != 0 {
			return &net.OpError{Op: "close", Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: net.ErrClosed}
		}
		if c.state.CompareAndSwap(s, s|sockClosed) {
			if s == 0 {
				c.closeFD()
			}
			return nil
		}
	}
}

func (c *sockConn) LocalAddr() net.Addr  { return c.laddr }
func (c *sockConn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline and the others give the socket to the poller (a zero time,
// when it has none, changes nothing).
func (c *sockConn) SetDeadline(t time.Time) error {
	return c.deadline(t, (*os.File).SetDeadline)
}

func (c *sockConn) SetReadDeadline(t time.Time) error {
	return c.deadline(t, (*os.File).SetReadDeadline)
}

func (c *sockConn) SetWriteDeadline(t time.Time) error {
	return c.deadline(t, (*os.File).SetWriteDeadline)
}

func (c *sockConn) deadline(t time.Time, set func(*os.File, time.Time) error) error {
	if t.IsZero() && c.file.Load() == nil {
		return nil
	}
	sf, err := c.poller()
	if err != nil {
		return err
	}
	return c.closedErr(set(sf.f, t))
}

// CloseWrite shuts the sending side down.
func (c *sockConn) CloseWrite() error {
	var err error
	if cerr := (sockRaw{c}).Control(func(fd uintptr) { err = syscall.Shutdown(int(fd), syscall.SHUT_WR) }); cerr != nil {
		return cerr
	}
	return err
}

// SetLinger sets SO_LINGER, as net.TCPConn's: 0 resets the connection at
// Close.
func (c *sockConn) SetLinger(sec int) error {
	var err error
	l := syscall.Linger{Onoff: 1, Linger: int32(sec)}
	if sec < 0 {
		l = syscall.Linger{}
	}
	if cerr := (sockRaw{c}).Control(func(fd uintptr) { err = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &l) }); cerr != nil {
		return cerr
	}
	return err
}
