package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/proxy/cdnconf"
)

// HealthCheck is an active check of a site's origins
// (cdnconf.HealthCheck).
type HealthCheck = cdnconf.HealthCheck

// PassiveHealth ejects an origin that keeps failing
// (cdnconf.PassiveHealth).
type PassiveHealth = cdnconf.PassiveHealth

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

// checker runs an origin's active health check until stopped.
type checker struct {
	cfg    HealthCheck
	cancel context.CancelFunc
	done   chan struct{}
}

// startChecker starts checking o with cfg.
func (op *originPools) startChecker(o *origin, cfg HealthCheck) *checker {
	ctx, cancel := context.WithCancel(context.Background())
	c := &checker{cfg: cfg, cancel: cancel, done: make(chan struct{})}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return op.dial(ctx, addr, cfg.Timeout)
		},
		TLSClientConfig:   o.hc.TLSConfig.Clone(),
		DisableKeepAlives: true, // each check proves that a connection can be made
		ForceAttemptHTTP2: false,
	}
	client := &http.Client{
		Transport: tr, Timeout: cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	target := o.url.Scheme + "://" + cdnconf.HostPort(o.url) + cfg.Path
	go func() {
		defer close(c.done)
		defer tr.CloseIdleConnections()
		t := time.NewTicker(cfg.Interval)
		defer t.Stop()
		for {
			err := check(ctx, client, target, o.url.Host)
			if ctx.Err() != nil {
				return
			}
			// A check the proxy could not make for want of descriptors says
			// nothing of the origin: it is not recorded.
			if err != nil && localShortage(err) {
				op.log.Debug("cdn health check skipped: out of descriptors", "origin", o.name)
			} else if o.health.checked(time.Now(), err, cfg) {
				if err != nil {
					op.log.Warn("cdn origin down", "origin", o.name, "error", err)
				} else {
					op.log.Info("cdn origin up", "origin", o.name)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return c
}

func (c *checker) stop() {
	c.cancel()
	<-c.done
}

// check is one health check: 2xx or 3xx in time is good.
func check(ctx context.Context, client *http.Client, target, host string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", target, nil)
	if err != nil {
		return err
	}
	req.Host = host
	req.Header.Set("User-Agent", "edgeproxy-health-check")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// reconcileCheckers makes the running checks those that sites ask for:
// checks start, restart with new settings, or stop (and their origins
// count as up again).
func (op *originPools) reconcileCheckers(want map[*origin]HealthCheck) {
	op.checkMu.Lock()
	defer op.checkMu.Unlock()
	for _, o := range op.all() {
		cfg, ok := want[o]
		if o.checker != nil && (!ok || o.checker.cfg != cfg) {
			o.checker.stop()
			o.checker = nil
			o.health.down.Store(false)
		}
		if ok && o.checker == nil {
			o.checker = op.startChecker(o, cfg)
		}
	}
}

// stopCheckers stops every check.
func (op *originPools) stopCheckers() { op.reconcileCheckers(nil) }

// OriginStatus is an origin pool's state, for the admin API.
type OriginStatus struct {
	Origin      string    `json:"origin"` // scheme://host:port
	Pool        string    `json:"pool"`   // the pool's name: the origin, and its TLS settings if a site sets them
	Sites       []string  `json:"sites"`  // the sites whose routes forward to the pool (their first host), sorted
	State       string    `json:"state"`  // up, down (active check), ejected (passive)
	HealthCheck bool      `json:"health_check"`
	Active      int64     `json:"active_requests"`
	Requests    uint64    `json:"requests"`
	Connects    uint64    `json:"connects"`
	ReuseRatio  float64   `json:"reuse_ratio"`
	Failures    uint64    `json:"failures"`
	Ejections   uint64    `json:"ejections"`
	LastError   string    `json:"last_error,omitempty"`
	LastCheck   time.Time `json:"last_check,omitzero"`
}

// Origins returns the state of every origin pool, and the sites that
// forward to it.
func (p *Proxy) Origins() []OriginStatus {
	now := time.Now()
	sites := p.state.Load().router.sitesOf()
	out := []OriginStatus{}
	for _, o := range p.pools.all() {
		o.health.mu.Lock()
		lastErr, lastCheck := o.health.lastError, o.health.lastCheck
		o.health.mu.Unlock()
		names := sites[o]
		if names == nil {
			names = []string{}
		}
		out = append(out, OriginStatus{
			Origin: cdnconf.OriginKey(o.url), Pool: o.name, Sites: names,
			State: o.health.state(now), HealthCheck: lastCheck != time.Time{},
			Active: o.active.Load(), Requests: o.requests.Load(), Connects: o.connects.Load(),
			ReuseRatio: reuseRatio(o.requests.Load(), o.connects.Load()),
			Failures:   o.failures.Load(), Ejections: o.health.ejectedTotal.Load(),
			LastError: lastErr, LastCheck: lastCheck,
		})
	}
	return out
}

// reuseRatio is the share of requests that went over a connection already
// open: 1 - connects/requests.
func reuseRatio(requests, connects uint64) float64 {
	if requests == 0 {
		return 0
	}
	return max(0, 1-float64(connects)/float64(requests))
}
