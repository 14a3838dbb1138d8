package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The clock of the hot path. A request reads the precise clock once, when
// it starts (its duration and the access log need it); the deadlines that
// bound each read and write of a connection are computed from a coarse
// clock, one word that a single goroutine of the process moves every
// clockStep, and reach the socket only when they must (lazyConn): moving
// a socket's deadline costs a clock read and a change of the runtime's
// timer heap, several times per request otherwise.

// clockStep is how often the coarse clock moves, and so how late a
// deadline computed from it may be cut: deadlines add one step, so that
// none is cut early.
const clockStep = 10 * time.Millisecond

var coarse struct {
	once sync.Once
	now  atomic.Int64 // Unix nanoseconds
}

// coarseNanos is the time in Unix nanoseconds, at most clockStep old.
func coarseNanos() int64 {
	coarse.once.Do(startClock)
	return coarse.now.Load()
}

// coarseNow is coarseNanos as a time.
func coarseNow() time.Time { return time.Unix(0, coarseNanos()) }

// pushDeadline gives set the deadline d from now by the coarse clock, plus
// one step so that it never comes early: for the gaps of a body or an
// origin exchange, moved at every read or write. On a lazyConn that costs
// an atomic store until the socket needs it. d ≤ 0 leaves the deadline
// alone.
func pushDeadline(d time.Duration, set func(time.Time) error) {
	if d > 0 {
		set(time.Unix(0, coarseNanos()+int64(d)+int64(clockStep)))
	}
}

// dueIn is the deadline d from now by the coarse clock, never early: in
// Unix nanoseconds, one step later than d from its reading.
func dueIn(d time.Duration) int64 { return coarseNanos() + int64(d) + int64(clockStep) }

func startClock() {
	coarse.now.Store(time.Now().UnixNano())
	go func() {
		t := time.NewTicker(clockStep)
		for range t.C {
			coarse.now.Store(time.Now().UnixNano())
		}
	}()
}

// lazyConn is a TCP connection whose deadlines are held in memory and given
// to the socket only when they must be: when a read or write finds the
// socket not ready and is about to wait in the poller, and the deadline
// asked for comes before the socket's (or the socket has none); when one
// asked for comes before the socket's while a read or write waits; and when
// the socket's passes before the one asked for, which the read or write
// that saw it then resumes under. A new connection whose request and
// response each take one read and one write so never arms a timer, and a
// keep-alive connection whose deadline moves later at every request
// touches its socket about once per timeout rather than several times per
// request. Reads and writes see a timeout only once the deadline asked for
// has passed, and only when they would wait: a read or write the socket is
// ready for succeeds (TLS, which fails a connection for good after a write
// timeout, sits above it).
//
// It hides the TCP connection's ReadFrom and WriteTo, which would read and
// write under the socket's deadlines; CloseWrite stays (upgrades).
type lazyConn struct {
	net.Conn        // a *sockConn, or an origin's *fdlimit.Conn: its descriptor goes back to the budget when it closes
	tcp      socket // the same connection's socket
	raw      rawIO  // its reads and writes
	rd, wd   lazyDue
}

// socket is what a lazyConn needs of its TCP socket: a *net.TCPConn or a
// *sockConn.
type socket interface {
	SyscallConn() (syscall.RawConn, error)
	CloseWrite() error
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
}

// lazyOf is the lazyConn under a client connection, or nil.
func lazyOf(c net.Conn) *lazyConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if l, ok := c.(interface{ lazy() *lazyConn }); ok {
		return l.lazy()
	}
	return nil
}

func (c *lazyConn) lazy() *lazyConn { return c }

func newLazyConn(c net.Conn, tcp socket) *lazyConn {
	l := &lazyConn{Conn: c, tcp: tcp}
	l.raw.init(tcp, l)
	return l
}

// lazyDue is one direction's deadline.
type lazyDue struct {
	mu      sync.Mutex   // serializes changes of the socket's deadline
	want    atomic.Int64 // asked for, Unix nanoseconds; 0: none
	socket  atomic.Int64 // the socket's; 0: none
	waiting atomic.Bool  // a read (write) found the socket not ready: it waits in the poller
}

func deadlineNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if n := t.UnixNano(); n > 0 {
		return n
	}
	return 1 // any time before 1970 is as past as the first nanosecond of it
}

func nanosDeadline(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// ask records the deadline t. The socket gets it when a read or write
// must wait (arm), or at once when one waits already.
func (d *lazyDue) ask(t time.Time, apply func(time.Time) error) error {
	d.want.Store(deadlineNanos(t))
	// Stored before waiting is loaded, as arm's caller stores waiting
	// before arm loads want: one of the two gives the socket the deadline.
	if !d.waiting.Load() {
		return nil
	}
	return d.arm(apply)
}

// arm gives the socket the deadline asked for when it comes before the
// socket's, or the socket has none: before a read or write waits in the
// poller, or while it does.
func (d *lazyDue) arm(apply func(time.Time) error) error {
	if w, s := d.want.Load(), d.socket.Load(); w == 0 || (s != 0 && s <= w) {
		return nil // the socket's comes first; moved when it passes
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.want.Load()
	if s := d.socket.Load(); w == 0 || (s != 0 && s <= w) {
		return nil
	}
	d.socket.Store(w)
	return apply(nanosDeadline(w))
}

// passed is called after the socket's deadline cut a read or write: it
// reports whether the deadline asked for has passed too; when it has not,
// the socket gets it and the caller tries again.
func (d *lazyDue) passed(apply func(time.Time) error) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		w := d.want.Load()
		if w != 0 && w <= time.Now().UnixNano() {
			return true
		}
		d.socket.Store(w)
		if apply(nanosDeadline(w)) != nil {
			return true // closed: the caller's error stands
		}
		if d.want.Load() == w {
			return false
		}
	}
}

// waitRead and waitWrite are called by a read or write that found the
// socket not ready, before it waits in the poller (rawIO).
func (c *lazyConn) waitRead() {
	c.rd.waiting.Store(true)
	c.rd.arm(c.Conn.SetReadDeadline)
}

func (c *lazyConn) waitWrite() {
	c.wd.waiting.Store(true)
	c.wd.arm(c.Conn.SetWriteDeadline)
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func (c *lazyConn) Read(p []byte) (int, error) {
	for {
		n, err := c.raw.read(p)
		c.rd.waiting.Store(false)
		if n > 0 || err == nil || !isTimeout(err) || c.rd.passed(c.Conn.SetReadDeadline) {
			return n, err
		}
	}
}

func (c *lazyConn) Write(p []byte) (int, error) {
	done := 0
	for {
		n, err := c.raw.write(p[done:])
		c.wd.waiting.Store(false)
		done += n
		if err == nil || !isTimeout(err) || c.wd.passed(c.Conn.SetWriteDeadline) {
			return done, err
		}
	}
}

func (c *lazyConn) SetDeadline(t time.Time) error {
	err := c.rd.ask(t, c.Conn.SetReadDeadline)
	if err2 := c.wd.ask(t, c.Conn.SetWriteDeadline); err == nil {
		err = err2
	}
	return err
}

func (c *lazyConn) SetReadDeadline(t time.Time) error  { return c.rd.ask(t, c.Conn.SetReadDeadline) }
func (c *lazyConn) SetWriteDeadline(t time.Time) error { return c.wd.ask(t, c.Conn.SetWriteDeadline) }

// CloseWrite shuts the sending side down (a relayed upgrade whose one
// side finished).
func (c *lazyConn) CloseWrite() error { return c.tcp.CloseWrite() }
