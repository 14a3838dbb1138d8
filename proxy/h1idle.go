package proxy

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The idle set: keep-alive connections of the HTTP/1.1 engine that wait
// for their next request without a goroutine and without a buffer. A
// connection whose goroutine has waited parkAfter for a request's first
// byte is parked: its read buffer goes back to the pool, its descriptor
// into an epoll set of the proxy's own, and its goroutine ends (its stack,
// grown on the request path, with it). One goroutine waits on the epoll
// set through the runtime's poller; when bytes (or the client's close)
// arrive on a parked connection, it starts a goroutine for it, which takes
// a buffer and reads the request as the connection's goroutine would
// have. A connection parks only after parkAfter, so one under load (the
// next request within it) never pays the set's system calls and the new
// goroutine.
//
// A parked connection belongs to the set: whoever takes it out (its bytes
// arrived, its idle timeout passed, it was told to go or killed) owns it
// from then on, and closes it or serves it.

// parkAfter is how long a keep-alive connection's goroutine waits for the
// next request before it parks the connection.
const parkAfter = 100 * time.Millisecond

// idleSet is the parked connections.
type idleSet struct {
	epfd int
	f    *os.File // epfd, for the runtime's poller
	rc   syscall.RawConn
	// parked counts the connections in the set (a metric).
	parked atomic.Int64
	start  sync.Once // run, at the first park

	mu    sync.Mutex        // guards the rest
	slots []*h1Conn         // by slot, the epoll event's key; nil: free
	free  []int32           // free slots
	gen   uint32            // the last generation given; tells a stale event from a slot's next connection
	lists map[int64]*h1List // by idle timeout: each in order of its deadline
	timer *time.Timer       // the idle timeouts
	armed int64             // when timer fires, Unix nanoseconds; 0: stopped
	done  bool              // closed
}

// h1List is the parked connections of one idle timeout, in order of their
// deadlines (they parked in that order).
type h1List struct{ head, tail *h1Conn }

func newIdleSet() (*idleSet, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(epfd), "cdn-idle-epoll") // non-blocking: the runtime's poller takes it
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &idleSet{epfd: epfd, f: f, rc: rc, lists: map[int64]*h1List{}}
	s.timer = time.AfterFunc(time.Hour, s.expire)
	s.timer.Stop()
	return s, nil
}

// run hands parked connections whose bytes arrived to goroutines, until
// the set is closed; it starts with the first park.
func (s *idleSet) run() {
	evs := make([]unix.EpollEvent, 128)
	var n int
	wait := func(fd uintptr) bool {
		for {
			var err error
			n, err = unix.EpollWait(int(fd), evs, 0)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil || n == 0:
				return false // wait in the poller
			}
			return true
		}
	}
	for {
		if err := s.rc.Read(wait); err != nil {
			return // closed
		}
		for _, ev := range evs[:n] {
			if hc := s.take(ev.Fd, uint32(ev.Pad)); hc != nil {
				go hc.resume()
			}
		}
	}
}

// park puts hc in the set, to be served again when bytes arrive, or closed
// at due (Unix nanoseconds, its idle timeout). It reports false, with hc
// still the caller's, when hc was told to go or cannot be watched.
func (s *idleSet) park(hc *h1Conn, due int64) bool {
	l := lazyOf(hc.c)
	if l == nil {
		return false
	}
	s.start.Do(func() { go s.run() })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || hc.stop.Load() {
		return false
	}
	slot := int32(len(s.slots))
	if k := len(s.free); k > 0 {
		slot = s.free[k-1]
		s.free = s.free[:k-1]
	} else {
		s.slots = append(s.slots, nil)
	}
	s.gen++
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: slot, Pad: int32(s.gen)}
	var err error
	fd := -1
	rc, cerr := l.tcp.SyscallConn()
	if cerr == nil {
		cerr = rc.Control(func(f uintptr) {
			fd = int(f)
			err = unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
		})
	}
	if cerr != nil || err != nil {
		s.free = append(s.free, slot)
		return false
	}
	hc.slot, hc.parkGen, hc.parkFD, hc.parkDue = slot, s.gen, fd, due
	s.slots[slot] = hc
	timeout := int64(hc.idleFor)
	lst := s.lists[timeout]
	if lst == nil {
		lst = &h1List{}
		s.lists[timeout] = lst
	}
	hc.parkList = lst
	hc.parkPrev, hc.parkNext = lst.tail, nil
	if lst.tail != nil {
		lst.tail.parkNext = hc
	} else {
		lst.head = hc
	}
	lst.tail = hc
	s.parked.Add(1)
	if s.armed == 0 || due < s.armed {
		s.arm(due)
	}
	return true
}

// arm sets the timer to fire at due; s.mu is held.
func (s *idleSet) arm(due int64) {
	s.armed = due
	s.timer.Reset(time.Duration(due - time.Now().UnixNano()))
}

// take takes the connection in slot out of the set, if it is the one the
// event of generation gen was for; nil otherwise.
func (s *idleSet) take(slot int32, gen uint32) *h1Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slot < 0 || int(slot) >= len(s.slots) {
		return nil
	}
	hc := s.slots[slot]
	if hc == nil || hc.parkGen != gen {
		return nil
	}
	s.removeLocked(hc)
	return hc
}

// takeConn takes hc out of the set, and reports whether it was there.
func (s *idleSet) takeConn(hc *h1Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if hc.parkList == nil {
		return false
	}
	s.removeLocked(hc)
	return true
}

func (s *idleSet) removeLocked(hc *h1Conn) {
	unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, hc.parkFD, nil)
	s.slots[hc.slot] = nil
	s.free = append(s.free, hc.slot)
	lst := hc.parkList
	if hc.parkPrev != nil {
		hc.parkPrev.parkNext = hc.parkNext
	} else {
		lst.head = hc.parkNext
	}
	if hc.parkNext != nil {
		hc.parkNext.parkPrev = hc.parkPrev
	} else {
		lst.tail = hc.parkPrev
	}
	hc.parkList, hc.parkPrev, hc.parkNext, hc.parkFD = nil, nil, nil, -1
	s.parked.Add(-1)
}

// expire closes the parked connections whose idle timeout passed, and
// sets the timer for the next.
func (s *idleSet) expire() {
	var gone []*h1Conn
	s.mu.Lock()
	now := time.Now().UnixNano()
	next := int64(0)
	for timeout, lst := range s.lists {
		for lst.head != nil && lst.head.parkDue <= now {
			hc := lst.head
			s.removeLocked(hc)
			gone = append(gone, hc)
		}
		if lst.head == nil {
			delete(s.lists, timeout)
			continue
		}
		if next == 0 || lst.head.parkDue < next {
			next = lst.head.parkDue
		}
	}
	s.armed = 0
	if next != 0 && !s.done {
		// Not sooner than a step of the coarse clock: the deadlines are
		// computed from it anyway.
		s.arm(max(next, now+int64(clockStep)))
	}
	s.mu.Unlock()
	if len(gone) > 0 {
		// A TLS connection's close sends an alert, within the send
		// timeout: not on the timer's goroutine.
		go func() {
			for _, hc := range gone {
				hc.closeParked()
			}
		}()
	}
}

// close stops the set: the goroutine ends, nothing parks any more. The
// connections still in it (none after Shutdown's drain) are closed.
func (s *idleSet) close() {
	s.mu.Lock()
	s.done = true
	s.timer.Stop()
	var gone []*h1Conn
	for _, hc := range s.slots {
		if hc != nil {
			gone = append(gone, hc)
		}
	}
	for _, hc := range gone {
		s.removeLocked(hc)
	}
	s.mu.Unlock()
	s.f.Close()
	for _, hc := range gone {
		hc.closeParked()
	}
}

// h1BufPool is the engine's read buffers: a parked connection holds none.
var h1BufPool = sync.Pool{New: func() any { b := make([]byte, h1BufSize); return &b }}

// h1Scratch is a connection's buffers for the origin's request, the
// policy's values and the lower-cased host, pooled: a new connection's
// requests do not grow them from nothing, a parked one holds none.
type h1Scratch struct{ req, scratch, hostBuf []byte }

var h1Scratches = sync.Pool{New: func() any { return new(h1Scratch) }}

// h1ScratchMax is the capacity past which a buffer is not pooled.
const h1ScratchMax = 16 << 10

// park parks the idle connection (its goroutine then ends), and reports
// whether it did.
func (hc *h1Conn) park() bool {
	if hc.p.idle == nil || !hc.p.idle.park(hc, hc.idleDue) {
		return false
	}
	return true
}

// release gives the connection's buffers back while it is parked: nothing
// of a request is left in them.
func (hc *h1Conn) release() {
	if hc.bufp != nil {
		h1BufPool.Put(hc.bufp)
		hc.bufp, hc.buf = nil, nil
	}
	if sc := hc.scr; sc != nil {
		keep := func(b []byte) []byte {
			if cap(b) > h1ScratchMax {
				return nil
			}
			return b[:0]
		}
		sc.req, sc.scratch, sc.hostBuf = keep(hc.req), keep(hc.scratch), keep(hc.hostBuf)
		h1Scratches.Put(sc)
		hc.scr = nil
	}
	hc.req, hc.scratch, hc.hostBuf = nil, nil, nil
	hc.rec = record{}
	hc.st = nil
}

// takeBuf gives the connection a read buffer and its scratch buffers.
func (hc *h1Conn) takeBuf() {
	hc.bufp = h1BufPool.Get().(*[]byte)
	hc.buf = *hc.bufp
	hc.r, hc.w = 0, 0
	sc := h1Scratches.Get().(*h1Scratch)
	hc.scr, hc.req, hc.scratch, hc.hostBuf = sc, sc.req, sc.scratch, sc.hostBuf
}

// resume serves a parked connection whose bytes arrived, on a goroutine
// of its own.
func (hc *h1Conn) resume() {
	hc.takeBuf()
	hc.run(false)
}

// closeParked closes a connection taken out of the set, and ends it.
func (hc *h1Conn) closeParked() {
	hc.c.Close()
	hc.finish()
}
