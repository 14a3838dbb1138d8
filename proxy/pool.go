package proxy

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Balance is how a route chooses among its origins.
type Balance string

const (
	// RoundRobin takes the origins in turn, each as often as its weight
	// (smooth weighted round-robin, as nginx does it).
	RoundRobin Balance = "round_robin"
	// LeastConnections takes the origin with the fewest requests in
	// flight relative to its weight.
	LeastConnections Balance = "least_connections"
)

// Origin is an origin of a site with its weight (default 1).
type Origin struct {
	URL    *url.URL
	Weight int
}

// HealthCheck is an active check: GET Path every Interval; an origin is
// down after Unhealthy failed checks in a row and up again after Healthy
// good ones. A check is good when the origin answers 2xx or 3xx within
// Timeout.
type HealthCheck struct {
	Path               string
	Interval, Timeout  time.Duration
	Healthy, Unhealthy int
}

func (h *HealthCheck) setDefaults() {
	if h.Interval <= 0 {
		h.Interval = 5 * time.Second
	}
	if h.Timeout <= 0 {
		h.Timeout = min(2*time.Second, h.Interval)
	}
	if h.Healthy <= 0 {
		h.Healthy = 2
	}
	if h.Unhealthy <= 0 {
		h.Unhealthy = 3
	}
}

// PassiveHealth ejects an origin after MaxFailures connection failures or
// timeouts in a row, for Ejection (doubling while it keeps failing, up to
// 8×). Zero values take the defaults, 3 and 30s.
type PassiveHealth struct {
	MaxFailures int
	Ejection    time.Duration
}

func (ph *PassiveHealth) setDefaults() {
	if ph.MaxFailures <= 0 {
		ph.MaxFailures = 3
	}
	if ph.Ejection <= 0 {
		ph.Ejection = 30 * time.Second
	}
}

// Retries bound the retries of a site's requests: at most Max more
// attempts on other origins, and retries at most Budget of the site's
// requests (plus MinPerSecond), so that a sick origin is not hammered.
// Zero values take the defaults, 2, 0.2 and 10; Max -1 turns retries off.
type Retries struct {
	Max          int
	Budget       float64
	MinPerSecond float64
}

func (r *Retries) setDefaults() {
	switch {
	case r.Max < 0:
		r.Max = 0
	case r.Max == 0:
		r.Max = 2
	}
	if r.Budget <= 0 {
		r.Budget = 0.2
	}
	if r.MinPerSecond <= 0 {
		r.MinPerSecond = 10
	}
}

// OriginTLS is how the proxy speaks TLS to https origins.
type OriginTLS struct {
	// InsecureSkipVerify accepts any certificate: for private origins only.
	InsecureSkipVerify bool
	// CAFile, when set, holds the CAs that origins' certificates must
	// chain to, in place of the system's.
	CAFile string
	// ServerName overrides the name verified and sent as SNI; empty: the
	// origin URL's host.
	ServerName string
}

// originHealth is an origin's state, shared by every route that uses it.
type originHealth struct {
	down         atomic.Bool  // the active check says so
	ejectedUntil atomic.Int64 // Unix nanoseconds; passive ejection
	consecFails  atomic.Int32 // connection failures and timeouts in a row
	ejections    atomic.Int32 // in a row, for the backoff
	ejectedTotal atomic.Uint64

	mu        sync.Mutex // guards the rest
	lastError string
	lastCheck time.Time
	checkRun  int // >0: good checks in a row, <0: failed ones
}

// usable reports whether the origin may take a request now.
func (h *originHealth) usable(now time.Time) bool {
	return !h.down.Load() && now.UnixNano() >= h.ejectedUntil.Load()
}

// succeeded clears the failure run after a good exchange, and ends an
// ejection (a request sent in panic mode proved the origin back).
func (h *originHealth) succeeded() {
	if h.consecFails.Load() != 0 {
		h.consecFails.Store(0)
	}
	if h.ejections.Load() != 0 {
		h.ejections.Store(0)
	}
	if h.ejectedUntil.Load() != 0 {
		h.ejectedUntil.Store(0)
	}
}

// failed counts a connection failure or timeout and ejects the origin at
// the threshold. It reports whether this failure ejected it.
func (h *originHealth) failed(now time.Time, err error, ph PassiveHealth) bool {
	h.mu.Lock()
	h.lastError = err.Error()
	h.mu.Unlock()
	if h.consecFails.Add(1) < int32(ph.MaxFailures) {
		return false
	}
	h.consecFails.Store(0)
	n := min(h.ejections.Add(1), 4) // 1×, 2×, 4×, 8×
	h.ejectedUntil.Store(now.Add(ph.Ejection << (n - 1)).UnixNano())
	h.ejectedTotal.Add(1)
	return true
}

// checked records an active check and reports a change of state.
func (h *originHealth) checked(now time.Time, err error, hc HealthCheck) (changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastCheck = now
	if err != nil {
		h.lastError = "health check: " + err.Error()
		h.checkRun = min(h.checkRun, 0) - 1
		if -h.checkRun >= hc.Unhealthy && !h.down.Load() {
			h.down.Store(true)
			return true
		}
		return false
	}
	h.checkRun = max(h.checkRun, 0) + 1
	if h.checkRun >= hc.Healthy && h.down.Load() {
		h.down.Store(false)
		h.ejectedUntil.Store(0) // the check vouches for it
		h.ejections.Store(0)
		return true
	}
	return false
}

// state names the origin's state for the admin API and logs.
func (h *originHealth) state(now time.Time) string {
	switch {
	case h.down.Load():
		return "down"
	case now.UnixNano() < h.ejectedUntil.Load():
		return "ejected"
	}
	return "up"
}

// weighted is an origin of a route with its weight.
type weighted struct {
	o      *origin
	weight int
	cur    int // smooth round-robin state, under route.mu
}

// pick returns the origin for the next attempt, skipping origins that are
// down, ejected or already tried; nil when none is left.
func (rt *route) pick(now time.Time, tried []*origin) *origin {
	n := len(rt.origins)
	if n == 1 {
		if o := rt.origins[0].o; o.health.usable(now) && len(tried) == 0 {
			return o
		}
		return nil
	}
	ok := func(o *origin) bool {
		if !o.health.usable(now) {
			return false
		}
		for _, t := range tried {
			if t == o {
				return false
			}
		}
		return true
	}
	switch {
	case rt.balance == LeastConnections:
		start := int(rt.next.Add(1))
		var best *origin
		var bestW int
		for i := range n {
			w := &rt.origins[(start+i)%n]
			if !ok(w.o) {
				continue
			}
			// active/weight < bestActive/bestWeight, without division.
			if best == nil || w.o.active.Load()*int64(bestW) < best.active.Load()*int64(w.weight) {
				best, bestW = w.o, w.weight
			}
		}
		return best
	case rt.equalWeights:
		start := int(rt.next.Add(1))
		for i := range n {
			if o := rt.origins[(start+i)%n].o; ok(o) {
				return o
			}
		}
		return nil
	}
	// Smooth weighted round-robin: every usable origin gains its weight,
	// the richest is chosen and pays the total.
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var best *weighted
	total := 0
	for i := range rt.origins {
		w := &rt.origins[i]
		if !ok(w.o) {
			continue
		}
		w.cur += w.weight
		total += w.weight
		if best == nil || w.cur > best.cur {
			best = w
		}
	}
	if best == nil {
		return nil
	}
	best.cur -= total
	return best.o
}

// panicPick is panic mode, as Envoy and nginx have it: when every origin
// of the route is ejected by passive health, a request is sent anyway to
// the one whose ejection ends first, rather than refused. Without it the
// only origin of a site that failed once stays out for the whole ejection
// though it came back at once; its first good answer ends the ejection,
// another failure extends it. Origins that the active check holds down
// stay out: the check probes them and brings them back. nil when some
// origin is usable (pick chooses) or none is merely ejected.
func (rt *route) panicPick(now time.Time) *origin {
	var best *origin
	var bestUntil int64
	for i := range rt.origins {
		o := rt.origins[i].o
		if o.health.usable(now) {
			return nil
		}
		if o.health.down.Load() {
			continue
		}
		if u := o.health.ejectedUntil.Load(); best == nil || u < bestUntil {
			best, bestUntil = o, u
		}
	}
	return best
}

// retryBudget lets retries be at most a ratio of requests, plus a floor
// per second: tokens are thousandths of a retry.
type retryBudget struct {
	ratio, floor int64 // per request, per second, in thousandths
	tokens       atomic.Int64
	last         atomic.Int64 // Unix nanoseconds of the last floor refill
}

const budgetCap = 100_000 // at most 100 retries saved up

func newRetryBudget(r Retries) *retryBudget {
	b := &retryBudget{ratio: int64(math.Round(r.Budget * 1000)), floor: int64(math.Round(r.MinPerSecond * 1000))}
	b.tokens.Store(budgetCap / 10)
	b.last.Store(time.Now().UnixNano())
	return b
}

// deposit credits one request.
func (b *retryBudget) deposit() {
	if b.tokens.Add(b.ratio) > budgetCap {
		b.tokens.Store(budgetCap)
	}
}

// withdraw takes one retry, if the budget has one.
func (b *retryBudget) withdraw(now time.Time) bool {
	last := b.last.Load()
	if el := now.UnixNano() - last; el > int64(10*time.Millisecond) && b.last.CompareAndSwap(last, now.UnixNano()) {
		b.tokens.Add(min(b.floor*el/int64(time.Second), budgetCap))
	}
	for {
		t := b.tokens.Load()
		if t < 1000 {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-1000) {
			return true
		}
	}
}

var errNoHealthyOrigin = errors.New("no healthy origin")

// dialError marks a failure to connect: nothing of the request was sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// forward sends req to an origin of rt, retrying on other origins where
// that is safe, and fills resp. bodyRead reports how much of a streamed
// request body was consumed (nil: none).
func (p *Proxy) forward(s *site, rt *route, req *fasthttp.Request, resp *fasthttp.Response, rec *record, bodyRead func() int64) error {
	return p.forwardCtx(nil, s, rt, req, resp, rec, bodyRead)
}

// forwardCtx is forward for a client whose going away ends ctx (nil: one
// that cannot tell): a request whose client has gone is not sent, and
// errClientGone is no fault of the origin's.
func (p *Proxy) forwardCtx(ctx context.Context, s *site, rt *route, req *fasthttp.Request, resp *fasthttp.Response, rec *record, bodyRead func() int64) error {
	now := rec.start
	s.budget.deposit()
	var triedBuf [4]*origin
	tried := triedBuf[:0]
	var lastErr error
	for attempt := 0; ; attempt++ {
		if ctx != nil && ctx.Err() != nil {
			p.pools.exchanges.beforeSend.Inc()
			return errClientGone
		}
		o := rt.pick(now, tried)
		if o == nil && attempt == 0 {
			if o = rt.panicPick(now); o != nil {
				p.fm.panicked.WithLabelValues(s.name).Inc()
			}
		}
		if o == nil {
			if lastErr != nil {
				return lastErr
			}
			return errNoHealthyOrigin
		}
		rec.upstream = o.name
		req.URI().SetSchemeBytes(o.scheme)
		o.active.Add(1)
		o.requests.Add(1)
		var err error
		if o.h2.tr != nil && p.pools.speaksH2(o) {
			err = p.pools.doH2(ctx, o, req, resp)
		} else {
			err = o.hc.Do(req, resp)
		}
		o.active.Add(-1)
		if err == nil {
			o.health.succeeded()
			return nil
		}
		if ctx != nil && ctx.Err() != nil {
			return errClientGone
		}
		if !originFault(err) {
			return err
		}
		o.failures.Add(1)
		if o.health.failed(time.Now(), err, s.passive) {
			p.log.Warn("cdn origin ejected", "origin", o.name, "error", err)
		}
		lastErr = err
		if attempt >= s.retries.Max || !retryable(err, req, bodyRead) || !s.budget.withdraw(time.Now()) {
			return err
		}
		s.retried.Inc()
		resp.Reset()
		tried = append(tried, o)
	}
}

// originFault reports whether an error is the origin's (refused, reset,
// closed or timed out), which counts against its health. Running out of
// descriptors (the budget, EMFILE, ENFILE) is the proxy's own shortage.
func originFault(err error) bool {
	if errors.Is(err, errBodyTooLarge) || errors.Is(err, fasthttp.ErrNoFreeConns) || errors.Is(err, errClientBody) ||
		errors.Is(err, errClientGone) || localShortage(err) {
		return false
	}
	return true
}

// retryable reports whether a failed attempt may be repeated on another
// origin: when the connection could not be made (nothing was sent) and no
// body was consumed, or when an idempotent request without a body lost its
// connection before any response. Timeouts are not retried: the origin may
// still be working on the request.
func retryable(err error, req *fasthttp.Request, bodyRead func() int64) bool {
	var de *dialError
	if errors.As(err, &de) || refusedStream(err) {
		return bodyRead == nil || bodyRead() == 0
	}
	if upstreamStatus(err) == 504 {
		return false
	}
	if !idempotent(req.Header.Method()) || bodyRead != nil || hasBody(&req.Header) {
		return false
	}
	return errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// hasBody reports whether a request announces a body: a Content-Length
// above zero or chunked (fasthttp gives -2 for none).
func hasBody(h *fasthttp.RequestHeader) bool {
	cl := h.ContentLength()
	return cl > 0 || cl == -1
}

func idempotent(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// errClientBody marks a failure to read the client's request body: the
// client's fault, not the origin's.
var errClientBody = errors.New("reading the request body")
