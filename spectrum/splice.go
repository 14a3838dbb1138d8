package spectrum

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
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
	copyBuffer      = 32 << 10
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

var buffers = sync.Pool{New: func() any { b := make([]byte, copyBuffer); return &b }}

// copyConn moves src's bytes to dst until src's end or an error. It waits
// for data holding no pipe and no buffer.
func (p *Proxy) copyConn(dst, src *net.TCPConn) (int64, error) {
	rs, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	ws, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		// Wait until src is readable (data, its end or an error) without
		// taking anything: peek at one byte.
		var peeked int
		var perr error
		if err := rs.Read(func(fd uintptr) bool {
			var b [1]byte
			peeked, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			return perr != unix.EAGAIN && perr != unix.EINTR
		}); err != nil {
			return total, err
		}
		if perr != nil {
			return total, perr
		}
		if peeked == 0 {
			return total, nil // the end
		}
		pp, ok := p.pipes.get()
		if !ok {
			n, err := bufferCopy(dst, src)
			total += n
			if err != nil {
				return total, err
			}
			continue
		}
		n, end, err := p.pipes.splice(ws, rs, pp)
		total += n
		if err != nil || end {
			return total, err
		}
	}
}

// splice moves src's data to dst through the pipe for as long as src has
// some without waiting, then gives the pipe back. It reports src's end.
func (pool *pipePool) splice(ws, rs syscall.RawConn, pp pipe) (total int64, end bool, err error) {
	for {
		var in int64
		var serr error
		if err := rs.Read(func(fd uintptr) bool {
			for {
				in, serr = unix.Splice(int(fd), nil, pp.w, nil, spliceChunk, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				if serr != unix.EINTR {
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
				m, err := unix.Splice(pp.r, nil, int(fd), nil, int(left), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				if err == unix.EAGAIN {
					return false
				}
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					werr = err
					return true
				}
				left -= m
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

// bufferCopy moves what src has (up to a buffer) to dst through a pooled
// buffer, for when no pipe is free.
func bufferCopy(dst, src *net.TCPConn) (int64, error) {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	n, err := src.Read(*bp)
	if n > 0 {
		if _, werr := dst.Write((*bp)[:n]); werr != nil {
			return 0, werr
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return int64(n), err
}
