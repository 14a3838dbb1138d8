package proxy

import (
	"context"
	"sync"
)

// connSet is one engine's client connections, for Shutdown: each is added
// when it starts serving (refused once the proxy is shutting down) and
// removed when it ends.
type connSet[T comparable] struct {
	mu sync.Mutex // guards m
	m  map[T]struct{}
	wg sync.WaitGroup // one per connection in m
}

// add adds c, unless closing is closed.
func (s *connSet[T]) add(c T, closing <-chan struct{}) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-closing:
		return false
	default:
	}
	if s.m == nil {
		s.m = map[T]struct{}{}
	}
	s.m[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// remove removes c; one that is not there (removed already) is left be.
func (s *connSet[T]) remove(c T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[c]; ok {
		delete(s.m, c)
		s.wg.Done()
	}
}

// all returns the connections now in the set.
func (s *connSet[T]) all() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, 0, len(s.m))
	for c := range s.m {
		out = append(out, c)
	}
	return out
}

// wait returns once the set is empty, or when ctx is done, after calling
// stop on every connection left.
func (s *connSet[T]) wait(ctx context.Context, stop func(T)) error {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, c := range s.all() {
			stop(c)
		}
		return ctx.Err()
	}
}

// Reowned tells the proxy that the bindings changed. Its connections on
// addresses that left the cdn are told to go, as a move needs them to:
// an HTTP/1.1 connection closes after its request in progress (at once
// when it waits for one), an HTTP/2 or HTTP/3 connection gets GOAWAY and
// closes when its streams are done (HTTP/3: within the idle timeout). It returns at once; a goroutine does the work,
// once for any number of changes that came while it ran.
func (p *Proxy) Reowned() {
	select {
	case p.reown <- struct{}{}:
	default: // one is pending: it sees this change too
	}
}

// reowning runs Reowned's work until the proxy shuts down.
func (p *Proxy) reowning() {
	for {
		select {
		case <-p.closing:
			return
		case <-p.reown:
			p.leaveUnowned()
		}
	}
}

// leaveUnowned tells every client connection on an address the cdn no
// longer owns to go.
func (p *Proxy) leaveUnowned() { p.eachUnowned(func(leave, _ func()) { leave() }) }

// CloseUnowned closes every client connection still held on an address
// the cdn no longer owns (a move's drain deadline passed), and returns how
// many.
func (p *Proxy) CloseUnowned() int {
	n := 0
	p.eachUnowned(func(_, kill func()) { n++; kill() })
	return n
}

// unowned counts the client connections held on addresses the cdn no
// longer owns: those a move has told to go, until they have.
func (p *Proxy) unowned() int {
	n := 0
	p.eachUnowned(func(_, _ func()) { n++ })
	return n
}

// eachUnowned calls fn with the ways to tell each client connection held
// on an address the cdn no longer owns to go, and to close it.
func (p *Proxy) eachUnowned(fn func(leave, kill func())) {
	if p.owns != nil {
		for _, hc := range p.h3conns.all() {
			if !p.owns(hc.edge) {
				fn(p.leaveH3(hc), hc.kill)
			}
		}
	}
	if p.ownsTCP == nil {
		return
	}
	for _, hc := range p.h1conns.all() {
		if !p.ownsTCP(hc.edge) {
			fn(hc.leave, hc.kill)
		}
	}
	for _, c := range p.handoffs.all() {
		if !p.ownsTCP(c.edge) {
			fn(c.leave, func() { c.Close() })
		}
	}
	for _, c := range p.h2conns.all() {
		if !p.ownsTCP(c.edge) {
			fn(c.shutdown, func() { c.fail(errH2ConnClosed) })
		}
	}
}
