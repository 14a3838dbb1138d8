package proxy

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/proxy/cdnconf"
)

// Retries bound the retries of a site's requests (cdnconf.Retries).
type Retries = cdnconf.Retries

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
	return p.forwardCtx(context.Background(), s, rt, req, resp, rec, bodyRead)
}

// forwardCtx is forward for a client whose going away ends ctx
// (context.Background(): one that cannot tell): a request whose client
// has gone is not sent, and errClientGone is no fault of the origin's.
func (p *Proxy) forwardCtx(ctx context.Context, s *site, rt *route, req *fasthttp.Request, resp *fasthttp.Response, rec *record, bodyRead func() int64) error {
	return p.forwardLoop(ctx, s, rt, rec, &fasthttpAttempt{p: p, ctx: ctx, req: req, resp: resp, bodyRead: bodyRead})
}

// attempt is one engine's exchange with an origin, for forwardLoop.
type attempt interface {
	// try sends the request to o and reads the response's head, at least.
	try(o *origin) error
	// retryable reports whether a failed try may be repeated on another
	// origin (see retryable).
	retryable(err error) bool
	// reset forgets what a failed try left behind.
	reset()
}

// fasthttpAttempt is the exchange of a request held as fasthttp's:
// through the origin's HTTP/2 connection when it speaks it, else its
// HTTP/1.1 pool.
type fasthttpAttempt struct {
	p        *Proxy
	ctx      context.Context
	req      *fasthttp.Request
	resp     *fasthttp.Response
	bodyRead func() int64
}

func (a *fasthttpAttempt) try(o *origin) error {
	a.req.URI().SetSchemeBytes(o.scheme)
	if o.h2.tr != nil && a.p.pools.speaksH2(o) {
		return a.p.pools.doH2(a.ctx, o, a.req, a.resp)
	}
	return o.hc.Do(a.req, a.resp)
}

func (a *fasthttpAttempt) retryable(err error) bool { return retryable(err, a.req, a.bodyRead) }
func (a *fasthttpAttempt) reset()                   { a.resp.Reset() }

// forwardLoop is the forwarding loop of every engine: an origin of rt
// (balance.go), the attempt, passive health, and retries on other origins
// where that is safe, within the site's budget.
func (p *Proxy) forwardLoop(ctx context.Context, s *site, rt *route, rec *record, a attempt) error {
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
		o.active.Add(1)
		o.requests.Add(1)
		err := a.try(o)
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
		if attempt >= s.retries.Max || !a.retryable(err) || !s.budget.withdraw(time.Now()) {
			return err
		}
		s.retried.Inc()
		a.reset()
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
	return connectionLost(err)
}

// connectionLost reports whether err is the loss of the origin's
// connection before any response: one an idempotent request without a
// body may be retried after.
func connectionLost(err error) bool {
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
