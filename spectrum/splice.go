package spectrum

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/internal/rawsys"
)

// Splice pipes. io.Copy between two *net.TCPConn splices, but each waiting
// direction holds a pipe pair (two descriptors) for as long as it waits: an
// idle connection cost six descriptors, not two, and ten thousand of them
// spent the process's open-file limit. copyConn waits for data without a
// pipe, borrows one from a bounded pool only while the data moves, and
// gives it back; when the pool is spent (or the budget refuses a new
// pipe), the data moves through a buffer instead.

const (
	// spliceChunk is the most one splice into a pipe takes: a pipe's
	// default capacity.
	spliceChunk = 64 << 10
	// maxIdlePipes are kept open for the next transfer.
	maxIdlePipes = 64
	// defaultMaxPipes bounds the pipes lent at once (two descriptors
	// each, counted in the budget).
	defaultMaxPipes = 512
)

type pipe struct{ r, w int }

// pipePool lends pipes to copies while data moves.
type pipePool struct {
	fds  *fdlimit.Budget
	max  int
	mu   sync.Mutex // guards idle and open
	idle []pipe
	open int // lent and idle
}

func (pp *pipePool) get() (pipe, bool) {
	pp.mu.Lock()
	if n := len(pp.idle); n > 0 {
		p := pp.idle[n-1]
		pp.idle = pp.idle[:n-1]
		pp.mu.Unlock()
		return p, true
	}
	if pp.open >= pp.max {
		pp.mu.Unlock()
		return pipe{}, false
	}
	pp.open++
	pp.mu.Unlock()
	if pp.fds.Acquire(fdlimit.Spectrum, 2) {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err == nil {
			return pipe{r: fds[0], w: fds[1]}, true
		}
		pp.fds.Release(fdlimit.Spectrum, 2)
	}
	pp.mu.Lock()
	pp.open--
	pp.mu.Unlock()
	return pipe{}, false
}

// put returns a pipe; one that still holds data is closed.
func (pp *pipePool) put(p pipe, empty bool) {
	pp.mu.Lock()
	if empty && len(pp.idle) < maxIdlePipes {
		pp.idle = append(pp.idle, p)
		pp.mu.Unlock()
		return
	}
	pp.open--
	pp.mu.Unlock()
	unix.Close(p.r)
	unix.Close(p.w)
	pp.fds.Release(fdlimit.Spectrum, 2)
}

// close closes the idle pipes.
func (pp *pipePool) close() {
	pp.mu.Lock()
	idle := pp.idle
	pp.idle = nil
	pp.open -= len(idle)
	pp.mu.Unlock()
	for _, p := range idle {
		unix.Close(p.r)
		unix.Close(p.w)
		pp.fds.Release(fdlimit.Spectrum, 2)
	}
}

// inUse returns the pipes open, lent and idle.
func (pp *pipePool) inUse() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.open
}

// Small messages are copied, not spliced: splicing one costs two splice
// calls and a pipe borrowed and given back, where a copy costs a read and a
// write. copyConn reads into a small pooled buffer and splices only after a
// read fills it (bulk), until the data stops coming in bulk.
const smallBuffer = 16 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, smallBuffer); return &b }}

// copyConn moves src's bytes to dst until src's end or an error. It waits
// for data holding no pipe and no buffer.
//
// Small messages are read and written inside one wait on src (one RawRead
// call), a read and a write each; no pipe, no peek, no second splice.
func (p *Proxy) copyConn(dst, src *net.TCPConn) (int64, error) {
	rs, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	ws, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	c := &tcpCopy{p: p, rs: rs, ws: ws, w: newFDWriter(ws)}
	bulk := false // the last round moved a buffer or more: splice
	for {
		var done bool
		if bulk {
			bulk, done, err = c.spliceRound(true)
		} else {
			bulk, done, err = c.bufferRound()
		}
		if done {
			return c.total, err
		}
	}
}

// tcpCopy is one direction of copyConn: its sockets and the bytes moved.
type tcpCopy struct {
	p      *Proxy
	rs, ws syscall.RawConn
	w      *fdWriter
	total  int64
}

// spliceRound splices what src has through a pooled pipe, after waiting
// for it when wait is set. Without a pipe to spare, the next round copies
// through the buffer. It reports whether the round moved a buffer or more
// (bulk), and whether the copy is done (src's end, or err).
func (c *tcpCopy) spliceRound(wait bool) (bulk, done bool, err error) {
	if wait {
		if err := peekWait(c.rs); err != nil {
			return false, true, err
		}
	}
	pp, ok := c.p.pipes.get()
	if !ok {
		return false, false, nil
	}
	n, end, err := c.p.pipes.splice(c.ws, c.rs, pp)
	c.total += n
	c.p.m.copiedSplice.Add(float64(n))
	if err != nil || end {
		return false, true, err
	}
	return n >= smallBuffer, false, nil
}

// bufferRound reads and writes small messages inside one wait on src,
// holding a buffer only while it reads; a read that fills the buffer is
// written and the rest spliced.
func (c *tcpCopy) bufferRound() (bulk, done bool, err error) {
	var (
		bp     *[]byte
		n      int
		rerr   error
		copied int64
		end    bool
	)
	err = c.rs.Read(func(fd uintptr) bool {
		for {
			if bp == nil {
				bp = buffers.Get().(*[]byte)
			}
			var e syscall.Errno
			n, e = rawsys.Recv(fd, *bp, 0)
			rerr = rawsys.Err(e)
			switch {
			case rerr == unix.EINTR:
				continue
			case rerr == unix.EAGAIN:
				buffers.Put(bp) // wait holding no buffer
				bp = nil
				return false
			case rerr != nil || n <= 0:
				end = true
				return true
			case n == len(*bp):
				return true // bulk: write it, then splice the rest
			}
			m, werr := c.w.writeAll((*bp)[:n])
			copied += int64(m)
			c.p.m.copiedBuffer.Add(float64(m))
			if werr != nil {
				rerr, end = werr, true
				return true
			}
			// Read again, even after a short read: the end of the
			// stream or an error may be queued behind the data, with
			// no edge of its own still to come.
		}
	})
	c.total += copied
	if err != nil || end {
		if bp != nil {
			buffers.Put(bp)
		}
		if err == nil {
			err = rerr // nil at src's end
		}
		return false, true, err
	}
	// A full buffer: more is likely queued; splice it.
	m, err := c.w.writeAll((*bp)[:n])
	buffers.Put(bp)
	c.total += int64(m)
	c.p.m.copiedBuffer.Add(float64(m))
	if err != nil {
		return false, true, err
	}
	return c.spliceRound(false)
}

// peekWait waits until rs is readable (data, its end or an error) without
// taking anything: it peeks at one byte.
func peekWait(rs syscall.RawConn) error {
	var perr error
	if err := rs.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			switch _, e := rawsys.Recv(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT); e {
			case 0:
				perr = nil
				return true
			case unix.EINTR:
			case unix.EAGAIN:
				return false
			default:
				perr = e
				return true
			}
		}
	}); err != nil {
		return err
	}
	return perr
}

// fdWriter writes whole buffers to a socket, waiting for room as needed,
// with its callback made once (a closure per write would be allocated per
// message).
type fdWriter struct {
	rc   syscall.RawConn
	b    []byte
	done int
	err  error
	fn   func(uintptr) bool
}

func newFDWriter(rc syscall.RawConn) *fdWriter {
	w := &fdWriter{rc: rc}
	w.fn = w.write
	return w
}

func (w *fdWriter) write(fd uintptr) bool {
	for w.done < len(w.b) {
		m, err := rawsys.Send(fd, w.b[w.done:], unix.MSG_NOSIGNAL)
		switch err {
		case 0:
			w.done += m
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			w.err = err
			return true
		}
	}
	return true
}

// writeAll writes b, waiting for room as needed.
func (w *fdWriter) writeAll(b []byte) (int, error) {
	w.b, w.done, w.err = b, 0, nil
	err := w.rc.Write(w.fn)
	if err == nil {
		err = w.err
	}
	w.b = nil
	return w.done, err
}

// splice moves src's data to dst through the pipe for as long as src has
// some without waiting, then gives the pipe back. It reports src's end.
func (pool *pipePool) splice(ws, rs syscall.RawConn, pp pipe) (total int64, end bool, err error) {
	for {
		var in int64
		var serr error
		if err := rs.Read(func(fd uintptr) bool {
			for {
				m, e := rawsys.Splice(fd, uintptr(pp.w), spliceChunk)
				if e != unix.EINTR {
					in, serr = int64(max(m, 0)), rawsys.Err(e)
					return true // EAGAIN too: wait without the pipe
				}
			}
		}); err != nil {
			pool.put(pp, true)
			return total, false, err
		}
		switch {
		case serr == unix.EAGAIN:
			pool.put(pp, true)
			return total, false, nil
		case serr != nil:
			pool.put(pp, true)
			return total, false, serr
		case in == 0:
			pool.put(pp, true)
			return total, true, nil
		}
		left := in
		var werr error
		err := ws.Write(func(fd uintptr) bool {
			for left > 0 {
				m, err := rawsys.Splice(uintptr(pp.r), fd, int(left))
				switch err {
				case 0:
					left -= int64(m)
				case unix.EINTR:
				case unix.EAGAIN:
					return false
				default:
					werr = err
					return true
				}
			}
			return true
		})
		total += in - left
		if err != nil || werr != nil {
			pool.put(pp, left == 0)
			return total, false, errors.Join(err, werr)
		}
	}
}
