package load

import (
	"context"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A schedule hands out send times to workers. Open loop (rate > 0): the
// i-th request is intended for start + i/rate; a pacer goroutine releases
// it at that time to whichever worker is free (or, when every worker is
// busy, as soon as one is), and latency counts from the intended time, so
// a request that waited for a free worker or connection while the server
// stalled is charged the wait (coordinated omission is avoided, not
// corrected afterwards). Closed loop (rate 0): a free worker sends at once.
//
// Go's timers wake up to a millisecond late, which would add to every
// open-loop latency; the pacer sleeps with nanosleep on a thread of its own
// with a 1 ns timer slack instead (tens of µs late), and wakes at most every
// pacerQuantum, releasing all that are due: at rates above 1/pacerQuantum a
// request may be released up to that much late.
type schedule struct {
	start, end time.Time
	interval   float64 // ns between intended sends; 0 for closed loop
	tokens     chan int64
	released   atomic.Int64
	stopped    atomic.Bool
}

const pacerQuantum = 50 * time.Microsecond

func newSchedule(ctx context.Context, rate float64, d time.Duration) *schedule {
	s := &schedule{start: time.Now()}
	s.end = s.start.Add(d)
	if rate > 0 {
		s.interval = 1e9 / rate
		s.tokens = make(chan int64)
		go s.pace(ctx)
	}
	return s
}

// at is the intended time of the i-th request.
func (s *schedule) at(i int64) time.Time {
	return s.start.Add(time.Duration(float64(i) * s.interval))
}

// planned is how many requests an open loop intends to send in all.
func (s *schedule) planned() int64 {
	if s.interval == 0 {
		return 0
	}
	return int64(math.Ceil(float64(s.end.Sub(s.start)) / s.interval))
}

func (s *schedule) pace(ctx context.Context) {
	defer close(s.tokens)
	defer twoProcs()()
	preciseThread()
	over := time.NewTimer(time.Until(s.end))
	defer over.Stop()
	planned := s.planned()
	for i := int64(0); i < planned; {
		due := min(int64(float64(time.Since(s.start))/s.interval)+1, planned)
		for ; i < due; i++ {
			select {
			case s.tokens <- i:
				s.released.Store(i + 1)
			case <-over.C:
				return
			case <-ctx.Done():
				return
			}
		}
		if i < planned {
			sleepUntil(s.at(i))
		}
	}
}

// preciseThread locks the calling goroutine to its thread (for good: the
// thread ends with the goroutine) and sets the thread's timer slack to 1 ns.
func preciseThread() {
	runtime.LockOSThread()
	unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
}

// twoProcs raises GOMAXPROCS to at least 2 until the function it returns
// is called (by every caller): a thread sleeping in nanosleep keeps its P
// until the runtime's monitor takes it back, tens of µs to milliseconds
// later, so with a single P the pacer's sleeps would hold up the workers.
// Two Ps on one CPU time-share it.
func twoProcs() (restore func()) {
	procs.Lock()
	defer procs.Unlock()
	if procs.users == 0 {
		procs.saved = runtime.GOMAXPROCS(0)
		if procs.saved < 2 {
			runtime.GOMAXPROCS(2)
		}
	}
	procs.users++
	return func() {
		procs.Lock()
		defer procs.Unlock()
		if procs.users--; procs.users == 0 && procs.saved < 2 {
			runtime.GOMAXPROCS(procs.saved)
		}
	}
}

var procs struct {
	sync.Mutex
	users, saved int
}

// sleepUntil sleeps until t, at least pacerQuantum, with nanosleep for the
// last 2 ms (Go's timers would be up to 1 ms late).
func sleepUntil(t time.Time) {
	wait := max(time.Until(t), pacerQuantum)
	if wait > 3*time.Millisecond {
		time.Sleep(wait - 2*time.Millisecond)
		wait = max(time.Until(t), pacerQuantum)
	}
	ts := unix.NsecToTimespec(int64(wait))
	unix.Nanosleep(&ts, nil)
}

// take returns the next request's intended time, waiting for it; false
// when the run is over (duration reached or ctx done).
func (s *schedule) take(ctx context.Context) (time.Time, bool) {
	if s.interval == 0 {
		now := time.Now()
		if s.stopped.Load() || ctx.Err() != nil || !now.Before(s.end) {
			s.stopped.Store(true)
			return time.Time{}, false
		}
		return now, true
	}
	select {
	case i, ok := <-s.tokens:
		if !ok {
			return time.Time{}, false
		}
		return s.at(i), true
	case <-ctx.Done():
		return time.Time{}, false
	}
}

// counts is what each worker keeps for itself and the run merges.
type counts struct {
	hist     *Histogram
	requests int
	errors   int
	firstErr error
}

// drive runs workers goroutines, each calling do for every send time it
// takes until the schedule ends, and merges what they counted. It returns
// the merged counts, the wall time from the schedule's start until the last
// request ended, and how many requests an open loop planned but never sent
// because every worker was busy until the end; each of those is recorded
// with the latency it had reached by then, a lower bound.
func drive(ctx context.Context, s *schedule, workers int, do func(ctx context.Context, w int) error) (counts, time.Duration, int) {
	all := make([]counts, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &all[w]
			c.hist = NewHistogram()
			for {
				t, ok := s.take(ctx)
				if !ok {
					return
				}
				err := do(ctx, w)
				lat := time.Since(t)
				c.requests++
				if err != nil {
					if ctx.Err() != nil {
						c.requests--
						return
					}
					c.errors++
					if c.firstErr == nil {
						c.firstErr = err
					}
					continue
				}
				c.hist.Record(lat)
			}
		}()
	}
	wg.Wait()
	stop := time.Now()
	total := counts{hist: NewHistogram()}
	for _, c := range all {
		total.hist.Merge(c.hist)
		total.requests += c.requests
		total.errors += c.errors
		if total.firstErr == nil {
			total.firstErr = c.firstErr
		}
	}
	unsent := 0
	if s.interval > 0 && ctx.Err() == nil {
		for i := s.released.Load(); i < s.planned(); i++ {
			total.hist.Record(stop.Sub(s.at(i)))
			unsent++
		}
	}
	return total, stop.Sub(s.start), unsent
}
