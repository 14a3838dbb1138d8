package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

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
	target := o.url.Scheme + "://" + hostPort(o.url) + cfg.Path
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

// OriginStatus is an origin's state, for the admin API.
type OriginStatus struct {
	Origin      string    `json:"origin"`
	State       string    `json:"state"` // up, down (active check), ejected (passive)
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

// Origins returns the state of every origin pool.
func (p *Proxy) Origins() []OriginStatus {
	now := time.Now()
	out := []OriginStatus{}
	for _, o := range p.pools.all() {
		o.health.mu.Lock()
		lastErr, lastCheck := o.health.lastError, o.health.lastCheck
		o.health.mu.Unlock()
		out = append(out, OriginStatus{
			Origin: o.name, State: o.health.state(now), HealthCheck: lastCheck != time.Time{},
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
