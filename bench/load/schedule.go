package load

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// A schedule hands out send times to workers. Open loop (rate > 0): the
// i-th request is intended for start + i/rate, whichever worker is free
// takes the next one and waits for its time; latency counts from that
// intended time, so a request that waited for a free worker or connection
// while the server stalled is charged the wait (coordinated omission is
// avoided, not corrected afterwards). Closed loop (rate 0): a free worker
// sends at once.
type schedule struct {
	start, end time.Time
	interval   float64 // ns between intended sends; 0 for closed loop
	next       atomic.Int64
	stopped    atomic.Bool
}

func newSchedule(rate float64, d time.Duration) *schedule {
	s := &schedule{start: time.Now()}
	s.end = s.start.Add(d)
	if rate > 0 {
		s.interval = 1e9 / rate
	}
	return s
}

// planned is how many requests an open loop intends to send in all.
func (s *schedule) planned() int64 {
	if s.interval == 0 {
		return 0
	}
	return int64(math.Ceil(float64(s.end.Sub(s.start)) / s.interval))
}

// take waits for the next request's time and returns it; false when the
// run is over (duration reached or ctx done).
func (s *schedule) take(ctx context.Context) (time.Time, bool) {
	if s.stopped.Load() || ctx.Err() != nil {
		return time.Time{}, false
	}
	now := time.Now()
	if !now.Before(s.end) {
		s.stopped.Store(true)
		return time.Time{}, false
	}
	if s.interval == 0 {
		return now, true
	}
	i := s.next.Add(1) - 1
	t := s.start.Add(time.Duration(float64(i) * s.interval))
	if !t.Before(s.end) {
		return time.Time{}, false
	}
	if wait := t.Sub(now); wait > 20*time.Microsecond {
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return time.Time{}, false
		}
	}
	return t, true
}

// taken is how many send times were handed out.
func (s *schedule) taken() int64 { return s.next.Load() }

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
		for i := s.taken(); i < s.planned(); i++ {
			t := s.start.Add(time.Duration(float64(i) * s.interval))
			total.hist.Record(stop.Sub(t))
			unsent++
		}
	}
	return total, stop.Sub(s.start), unsent
}
