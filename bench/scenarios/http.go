package scenarios

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/bench/load"
)

// The http group: edgeproxy's cdn against nginx and HAProxy as reverse
// proxies to the same origin (httpfix.go), each on SUTCPU with one worker,
// the load (wrk, h2load) and the origin on LoadCPU.

var httpSystems = []string{"edgeproxy", "nginx", "haproxy"}

// loadRound is how long one system gets load in a round of a full run.
const loadRound = 2 * time.Second

func init() {
	harness.Register(harness.Scenario{Name: "http-h1", Group: "http", Needs: []string{"nginx", "haproxy", "wrk"},
		Run: func(c *harness.Ctx, r *harness.Result) error {
			r.Title = "HTTP/1.1 keep-alive proxy, access log off"
			return runWrkScenario(c, r, proxyOpts{}, false, 64, nil)
		}})
	harness.Register(harness.Scenario{Name: "http-h1-log", Group: "http", Needs: []string{"nginx", "haproxy", "wrk"},
		Run: func(c *harness.Ctx, r *harness.Result) error {
			r.Title = "HTTP/1.1 keep-alive proxy, access log on"
			r.Notes = append(r.Notes, "access logs to a file: edgeproxy cdn.access_log, nginx combined buffer=64k, "+
				"HAProxy option httplog to its stdout (log stdout), which is a file: a write per request")
			return runWrkScenario(c, r, proxyOpts{accessLog: true}, false, 64, nil)
		}})
	harness.Register(harness.Scenario{Name: "http-https", Group: "http", Needs: []string{"nginx", "haproxy", "wrk"},
		Run: func(c *harness.Ctx, r *harness.Result) error {
			r.Title = "HTTPS/1.1 keep-alive proxy (TLS 1.3)"
			return runWrkScenario(c, r, proxyOpts{}, true, 64, nil)
		}})
	harness.Register(harness.Scenario{Name: "http-h2", Group: "http", Needs: []string{"nginx", "haproxy", "h2load"},
		Run: runH2})
	harness.Register(harness.Scenario{Name: "http-tls-handshakes", Group: "http", Needs: []string{"nginx", "haproxy", "openssl"},
		Run: runHandshakes})
	harness.Register(harness.Scenario{Name: "http-new-conns", Group: "http", Needs: []string{"nginx", "haproxy", "wrk"},
		Run: func(c *harness.Ctx, r *harness.Result) error {
			r.Title = "new HTTP connections, one request each"
			r.Unit = "connection"
			r.Notes = append(r.Notes, "wrk with Connection: close: every request a new connection")
			return runWrkScenario(c, r, proxyOpts{}, false, 32, []string{"-H", "Connection: close"})
		}})
	harness.Register(harness.Scenario{Name: "http-idle-memory", Group: "http", Needs: []string{"nginx", "haproxy"},
		Run: runIdleMemory})
	harness.Register(harness.Scenario{Name: "http-latency", Group: "http", Needs: []string{"nginx", "haproxy", "wrk"},
		Run: runLatency})
	harness.Register(harness.Scenario{Name: "http-h3", Group: "http", Needs: []string{"nginx"},
		Run: runH3})
}

func setVersions(r *harness.Result, tools ...string) {
	r.Versions["nginx"] = harness.Version("nginx")
	r.Versions["haproxy"] = harness.Version("haproxy")
	for _, t := range tools {
		r.Versions[t] = harness.Version(t)
	}
}

// runWrkScenario measures the maximum rate of wrk (conns connections,
// extra arguments) through each proxy, and the proxy's CPU per request.
func runWrkScenario(c *harness.Ctx, r *harness.Result, opts proxyOpts, useTLS bool, conns int, extra []string) error {
	if r.Unit == "" {
		r.Unit = "request"
	}
	r.Primary, r.Secondary = harness.CPUPerUnit, harness.Rate
	setVersions(r, "wrk")
	d := c.Mode.D(loadRound)
	r.Params["connections"] = conns
	r.Params["load_s"] = loadSeconds(d)
	r.Params["response_body_bytes"] = len(originBody)
	r.Params["tls"] = useTLS
	if len(extra) > 0 {
		r.Params["wrk_args"] = extra
	}
	f, err := startFixture(c, opts)
	if err != nil {
		return err
	}
	defer f.stop()
	err = f.alternate(c, r, func(p *proxy) (loadResult, error) {
		url := "http://" + p.plain + "/"
		if useTLS {
			url = "https://" + p.tls + "/"
		}
		return wrk(url, conns, d, extra...)
	})
	if err != nil || !opts.accessLog {
		return err
	}
	// The logs were written: a system that logged nothing measured
	// nothing of what the scenario is about.
	time.Sleep(1100 * time.Millisecond) // nginx flushes its buffer each second
	for _, sys := range httpSystems {
		st, err := os.Stat(filepath.Join(c.Dir, sys, "access.log"))
		if err != nil || st.Size() == 0 {
			return fmt.Errorf("%s wrote no access log: %v", sys, err)
		}
		r.Params["access_log_bytes_"+sys] = st.Size()
	}
	return nil
}

// runHandshakes is new TLS 1.3 connections, a full handshake and one
// request each, from openssl s_time clients (wrk would resume the sessions
// of a server that sends tickets, as edgeproxy does).
func runHandshakes(c *harness.Ctx, r *harness.Result) error {
	const clients = 8
	r.Title = "new TLS 1.3 connections, one request each (full handshakes)"
	r.Unit = "handshake"
	r.Primary, r.Secondary = harness.CPUPerUnit, harness.Rate
	setVersions(r, "openssl")
	d := c.Mode.D(loadRound)
	r.Params["clients"] = clients
	r.Params["load_s"] = loadSeconds(d)
	r.Notes = append(r.Notes, "openssl s_time -new -www /: every connection a full handshake (no resumption) and one HTTP/1.0 request; "+
		"ECDSA P-256 certificate; nginx and HAProxy send no session tickets here, edgeproxy does (its default, which it cannot turn off): their cost is in its figure; "+
		"the rate is bounded by the clients, which share the load CPU")
	f, err := startFixture(c, proxyOpts{})
	if err != nil {
		return err
	}
	defer f.stop()
	return f.alternate(c, r, func(p *proxy) (loadResult, error) { return sTime(p.tls, clients, d) })
}

// runH2 is HTTP/2 over TLS, 16 connections of 32 streams each.
func runH2(c *harness.Ctx, r *harness.Result) error {
	const conns, streams = 16, 32
	r.Title = "HTTP/2 over TLS (16 connections × 32 streams)"
	r.Unit = "request"
	r.Primary, r.Secondary = harness.CPUPerUnit, harness.Rate
	setVersions(r, "h2load")
	d := c.Mode.D(loadRound)
	r.Params["connections"] = conns
	r.Params["streams_per_connection"] = streams
	r.Params["load_s"] = loadSeconds(d)
	r.Params["response_body_bytes"] = len(originBody)
	f, err := startFixture(c, proxyOpts{})
	if err != nil {
		return err
	}
	defer f.stop()
	return f.alternate(c, r, func(p *proxy) (loadResult, error) {
		return h2load("https://"+p.tls+"/", conns, streams, d)
	})
}

// Metrics of http-idle-memory: memory per idle keep-alive connection, KB,
// cleartext and TLS.
const (
	kbPerConnPlain = harness.MemPerConn + "_plain"
	kbPerConnTLS   = harness.MemPerConn + "_tls"
)

// runIdleMemory opens n keep-alive connections to each proxy, one request
// on each, and leaves them idle: the growth of the proxy's resident memory
// over n. Each measurement starts from a freshly started proxy (memory a
// runtime got back from closed connections would hide the next ones).
func runIdleMemory(c *harness.Ctx, r *harness.Result) error {
	n := c.Mode.N(8000, 100)
	settle := c.Mode.D(500 * time.Millisecond)
	r.Title = "idle keep-alive memory (cleartext / TLS)"
	r.Unit = "connection"
	r.Primary, r.Secondary = kbPerConnPlain, kbPerConnTLS
	setVersions(r)
	r.Params["connections"] = n
	r.Params["settle_s"] = settle.Seconds()
	r.Notes = append(r.Notes, "RSS of the proxy's process tree after the connections are open and idle (one request each), less RSS before, over the connections; each from a freshly started proxy warmed with 100 requests")
	f, err := newFixture(c, proxyOpts{})
	if err != nil {
		return err
	}
	defer f.stop()
	return harness.Alternate(c, r, httpSystems, func(sys string, round int) (map[string]float64, error) {
		// Every measurement starts from a fresh process: the warm-up
		// round only warms the page cache, with fewer connections.
		count := n
		if round == 0 {
			count = min(n, 500)
		}
		m := map[string]float64{}
		for _, useTLS := range []bool{false, true} {
			p, err := f.restart(sys)
			if err != nil {
				return nil, err
			}
			addr := p.plain
			if useTLS {
				addr = p.tls
			}
			warm, err := openIdle(addr, useTLS, 1, 100)
			closeAll(warm)
			if err != nil {
				return nil, err
			}
			time.Sleep(settle)
			before := p.proc.RSS()
			t0 := time.Now()
			conns, err := openIdle(addr, useTLS, count, 1)
			if err != nil {
				closeAll(conns)
				return nil, err
			}
			c.Log("%s: %d connections to %s in %v", r.Scenario, count, sys, time.Since(t0).Round(time.Millisecond))
			time.Sleep(settle)
			after := p.proc.RSS()
			closeAll(conns)
			key := kbPerConnPlain
			if useTLS {
				key = kbPerConnTLS
			}
			m[key] = (after - before) / float64(count)
		}
		return m, nil
	})
}

// latencyShares are the fixed rates of http-latency, in percent of
// nginx's maximum.
var latencyShares = []int{50, 80}

// runLatency measures nginx's maximum rate (wrk, 64 connections, the
// better of two runs), then sends open-loop HTTP/1.1 load at 50% and 80%
// of it through each proxy (bench/load, 64 connections, latency from each
// request's intended send time): p50, p99 and p99.9 at each rate, metrics
// p99_ms_50 and so on.
func runLatency(c *harness.Ctx, r *harness.Result) error {
	const conns = 64
	r.Title = "latency at fixed rates of 50% and 80% of nginx's maximum (HTTP/1.1)"
	r.Unit = "request"
	r.Primary, r.Secondary = harness.P99+"_50", harness.P99+"_80"
	setVersions(r, "wrk")
	d := c.Mode.D(loadRound)
	r.Params["connections"] = conns
	r.Params["load_s"] = d.Seconds()
	r.Params["shares_pct"] = latencyShares
	r.Notes = append(r.Notes, "open loop (bench/load): requests at fixed intervals, latency from the intended send time (coordinated omission corrected); the generator runs in the harness process, pinned to the load CPU")
	f, err := startFixture(c, proxyOpts{})
	if err != nil {
		return err
	}
	defer f.stop()
	dial, err := newNSDialer()
	if err != nil {
		return err
	}
	defer dial.close()
	// nginx's maximum: the better of two closed-loop runs (the first
	// also warms it up).
	var nginxMax float64
	for range 2 {
		maxRun, err := wrk("http://"+f.proxies["nginx"].plain+"/", conns, c.Mode.D(loadRound))
		if err != nil {
			return err
		}
		nginxMax = max(nginxMax, maxRun.units/maxRun.secs)
	}
	r.Params["nginx_max_rate"] = nginxMax
	c.Log("%s: nginx's maximum %.0f requests/s", r.Scenario, nginxMax)
	return harness.Alternate(c, r, httpSystems, func(sys string, round int) (map[string]float64, error) {
		p := f.proxies[sys]
		m := map[string]float64{}
		for _, share := range latencyShares {
			rate := nginxMax * float64(share) / 100
			before := p.proc.CPU()
			res, err := generate(load.HTTPOptions{URL: "http://" + p.plain + "/", Rate: rate, Duration: d,
				Conns: conns, Dial: dial.DialContext})
			if err != nil {
				return nil, fmt.Errorf("%s at %d%%: %w", sys, share, err)
			}
			cpu := p.proc.CPU() - before
			ok := res.Requests - res.Errors
			if ok <= 0 || res.Errors > res.Requests/100 {
				return nil, fmt.Errorf("%s at %d%%: %d of %d failed (%s)", sys, share, res.Errors, res.Requests, res.FirstError)
			}
			sfx := fmt.Sprintf("_%d", share)
			m[harness.P50+sfx] = ms(res.Latency.Percentile(50))
			m[harness.P99+sfx] = ms(res.Latency.Percentile(99))
			m[harness.P999+sfx] = ms(res.Latency.Percentile(99.9))
			m[harness.Rate+sfx] = res.Rate
			m[harness.CPUPerUnit+sfx] = float64(cpu.Microseconds()) / float64(ok)
			m[harness.Failed+sfx] = float64(res.Errors)
			m["unsent"+sfx] = float64(res.Unsent)
		}
		return m, nil
	})
}

// runH3 is HTTP/3 against edgeproxy's own HTTP/2, one edgeproxy serving
// both, 16 connections × 32 streams, closed loop (bench/load).
func runH3(c *harness.Ctx, r *harness.Result) error {
	const conns, streams = 16, 32
	r.Title = "HTTP/3 against edgeproxy's and nginx's HTTP/2, one client (16 connections × 32 streams)"
	r.Unit = "request"
	r.Primary, r.Secondary = harness.CPUPerUnit, harness.Rate
	setVersions(r)
	d := c.Mode.D(loadRound)
	r.Params["connections"] = conns
	r.Params["streams_per_connection"] = streams
	r.Params["load_s"] = d.Seconds()
	r.Notes = append(r.Notes, "closed loop (bench/load) in the harness process, pinned to the load CPU; no peer here speaks HTTP/3: edgeproxy-h2 is the same edgeproxy over HTTP/2, nginx-h2 nginx's HTTP/2, both under the same client as HTTP/3 "+
		"(a client's batching moves the server's CPU per request: http-h2 measures HTTP/2 under h2load)")
	f, err := newFixture(c, proxyOpts{http3: true})
	if err != nil {
		return err
	}
	defer f.stop()
	if err := f.start("edgeproxy", "nginx"); err != nil {
		return err
	}
	dial, err := newNSDialer()
	if err != nil {
		return err
	}
	defer dial.close()
	return harness.Alternate(c, r, []string{"edgeproxy-h3", "edgeproxy-h2", "nginx-h2"}, func(sys string, round int) (map[string]float64, error) {
		p := f.proxies["edgeproxy"]
		if sys == "nginx-h2" {
			p = f.proxies["nginx"]
		}
		o := load.HTTPOptions{URL: "https://" + p.tls + "/", Proto: "h2", Duration: d, Conns: conns, Streams: streams,
			Insecure: true, ServerName: "bench.example", Dial: dial.DialContext}
		if sys == "edgeproxy-h3" {
			o.Proto, o.Dial, o.LocalAddr, o.ListenPacket = "h3", nil, "127.0.0.1", dial.ListenPacket
		}
		before := p.proc.CPU()
		res, err := generate(o)
		if err != nil {
			return nil, err
		}
		cpu := p.proc.CPU() - before
		ok := res.Requests - res.Errors
		if ok <= 0 || res.Errors > res.Requests/100 {
			return nil, fmt.Errorf("%d of %d failed (%s)", res.Errors, res.Requests, res.FirstError)
		}
		return map[string]float64{
			harness.Rate:       res.Rate,
			harness.CPUPerUnit: float64(cpu.Microseconds()) / float64(ok),
			harness.Failed:     float64(res.Errors),
			harness.P50:        ms(res.Latency.Percentile(50)),
			harness.P99:        ms(res.Latency.Percentile(99)),
		}, nil
	})
}

// generate runs bench/load's HTTP generator with this process pinned to
// the load CPU.
func generate(o load.HTTPOptions) (*load.HTTPResult, error) {
	restore, err := pinSelf(harness.LoadCPU)
	if err != nil {
		return nil, err
	}
	defer restore()
	ctx, cancel := context.WithTimeout(context.Background(), o.Duration+30*time.Second)
	defer cancel()
	return load.HTTP(ctx, o)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
