package proxy

import (
	"sync"
	"time"
)

// workers are the goroutines of one kind of request (HTTP/2 and HTTP/3
// streams) parked after their request, at most maxIdleWorkers: the next
// request goes to the most recently parked, whose stack has grown on the
// request path already, instead of a new goroutine. A janitor, running
// while some are parked, sends away those parked for workerIdle.
type workers[S any] struct {
	// run serves one request and returns the time to park the worker
	// with (a time the request read already: no clock read).
	run func(*S) time.Time

	mu      sync.Mutex
	idle    []*worker[S] // the longest parked first
	janitor bool
}

type worker[S any] struct {
	next   chan *S // nil: leave
	parked time.Time
}

const (
	maxIdleWorkers = 256
	workerIdle     = 10 * time.Second
)

// start serves s on a parked worker, or on a new one.
func (ws *workers[S]) start(s *S) {
	if w := ws.get(); w != nil {
		w.next <- s
		return
	}
	go ws.work(s)
}

func (ws *workers[S]) get() *worker[S] {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	n := len(ws.idle)
	if n == 0 {
		return nil
	}
	w := ws.idle[n-1] // the most recently parked: its stack is warm
	ws.idle[n-1] = nil
	ws.idle = ws.idle[:n-1]
	return w
}

// work runs s, then the requests handed to it while it is parked.
func (ws *workers[S]) work(s *S) {
	w := &worker[S]{next: make(chan *S, 1)}
	for s != nil {
		if !ws.park(w, ws.run(s)) {
			return
		}
		s = <-w.next
	}
}

// park offers w for the next request; false: enough are parked.
func (ws *workers[S]) park(w *worker[S], now time.Time) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if len(ws.idle) >= maxIdleWorkers {
		return false
	}
	w.parked = now
	ws.idle = append(ws.idle, w)
	if !ws.janitor {
		ws.janitor = true
		go ws.sweep()
	}
	return true
}

// sweep sends away the workers parked for workerIdle, until none is
// parked.
func (ws *workers[S]) sweep() {
	for {
		time.Sleep(workerIdle / 2)
		now := time.Now()
		ws.mu.Lock()
		k := 0
		for k < len(ws.idle) && now.Sub(ws.idle[k].parked) >= workerIdle {
			ws.idle[k].next <- nil
			k++
		}
		ws.idle = append(ws.idle[:0], ws.idle[k:]...)
		if len(ws.idle) == 0 {
			ws.janitor = false
			ws.mu.Unlock()
			return
		}
		ws.mu.Unlock()
	}
}
