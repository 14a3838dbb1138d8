package spectrum

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// refusalLogsPerSecond bounds the refusal lines: a flood of refusals
// (a UDP flood of new flows makes one a datagram) must not become a flood
// of log lines. The counters still count each.
const refusalLogsPerSecond = 10

// logLimiter lets through at most n lines a second; the next line let
// through says how many were left out.
type logLimiter struct {
	n          int
	suppressed prometheus.Counter

	mu      sync.Mutex // guards the rest
	window  int64      // the second of the lines counted
	lines   int
	dropped int
}

func newLogLimiter(n int, suppressed prometheus.Counter) *logLimiter {
	return &logLimiter{n: n, suppressed: suppressed}
}

// allow reports whether a line may be written now and how many were left
// out before it.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := now.Unix(); s != l.window {
		l.window, l.lines = s, 0
	}
	if l.lines >= l.n {
		l.dropped++
		l.suppressed.Inc()
		return false, 0
	}
	l.lines++
	d := l.dropped
	l.dropped = 0
	return true, d
}

// logRefusal writes a refusal line, within the rate limit.
func (p *Proxy) logRefusal(args ...any) {
	ok, left := p.refusals.allow(time.Now())
	if !ok {
		return
	}
	if left > 0 {
		args = append(args, "suppressed_before", left)
	}
	p.log.Info("spectrum refused", args...)
}
