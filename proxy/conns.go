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
