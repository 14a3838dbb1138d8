package scenarios

import (
	"time"

	"github.com/edgeproxy/edgeproxy/bench/harness"
)

// The http group: edgeproxy's cdn against nginx and HAProxy as reverse
// proxies to the same origin (httpfix.go), each on SUTCPU with one worker,
// the load (wrk, h2load) and the origin on LoadCPU.

var httpSystems = []string{"edgeproxy", "nginx", "haproxy"}

// loadRound is how long one system gets load in a round of a full run.
const loadRound = 4 * time.Second

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
	harness.Register(harness.Scenario{Name: "http-tls-handshakes", Group: "http", Needs: []string{"nginx", "haproxy", "wrk"},
		Run: func(c *harness.Ctx, r *harness.Result) error {
			r.Title = "new TLS 1.3 connections, one request each (full handshakes)"
			r.Unit = "handshake"
			r.Notes = append(r.Notes, "wrk with Connection: close over https: every request a new connection and a full handshake (wrk does not resume sessions); ECDSA P-256 certificate")
			return runWrkScenario(c, r, proxyOpts{}, true, 32, []string{"-H", "Connection: close"})
		}})
	harness.Register(harness.Scenario{Name: "http-new-conns", Group: "http", Needs: []string{"nginx", "haproxy", "wrk"},
		Run: func(c *harness.Ctx, r *harness.Result) error {
			r.Title = "new HTTP connections, one request each"
			r.Unit = "connection"
			r.Notes = append(r.Notes, "wrk with Connection: close: every request a new connection")
			return runWrkScenario(c, r, proxyOpts{}, false, 32, []string{"-H", "Connection: close"})
		}})
	harness.Register(harness.Scenario{Name: "http-idle-memory", Group: "http", Needs: []string{"nginx", "haproxy"},
		Run: runIdleMemory})
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
	f, err := newFixture(c, opts)
	if err != nil {
		return err
	}
	defer f.stop()
	if err := f.start(httpSystems...); err != nil {
		return err
	}
	return harness.Alternate(c, r, httpSystems, func(sys string, round int) (map[string]float64, error) {
		p := f.proxies[sys]
		url := "http://" + p.plain + "/"
		if useTLS {
			url = "https://" + p.tls + "/"
		}
		before := p.proc.CPU()
		lr, err := wrk(url, conns, d, extra...)
		if err != nil {
			return nil, err
		}
		return measured(sys, lr, p.proc.CPU()-before)
	})
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
	f, err := newFixture(c, proxyOpts{})
	if err != nil {
		return err
	}
	defer f.stop()
	if err := f.start(httpSystems...); err != nil {
		return err
	}
	return harness.Alternate(c, r, httpSystems, func(sys string, round int) (map[string]float64, error) {
		p := f.proxies[sys]
		before := p.proc.CPU()
		lr, err := h2load("https://"+p.tls+"/", conns, streams, d)
		if err != nil {
			return nil, err
		}
		return measured(sys, lr, p.proc.CPU()-before)
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
	settle := c.Mode.D(time.Second)
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
			conns, err := openIdle(addr, useTLS, n, 1)
			if err != nil {
				closeAll(conns)
				return nil, err
			}
			time.Sleep(settle)
			after := p.proc.RSS()
			closeAll(conns)
			key := kbPerConnPlain
			if useTLS {
				key = kbPerConnTLS
			}
			m[key] = (after - before) / float64(n)
		}
		return m, nil
	})
}
