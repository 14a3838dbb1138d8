package scenarios

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
)

// The http scenarios' fixture: one origin (nginx on LoadCPU answering a
// small fixed body, keep-alive) and the proxies in front of it, each on
// SUTCPU with one worker: edgeproxy's cdn on a steered documentation
// address, nginx and HAProxy as reverse proxies on loopback ports.
//
// Ports (the http helper's range, 18100-18199): the origin 18100; nginx
// 18101 (cleartext) and 18102 (TLS); HAProxy 18103 and 18104; edgeproxy's
// admin API 18180; edgeproxy's cdn on 192.0.2.1:80 and :443 (UDP 443 for
// HTTP/3).
const (
	originAddr   = "127.0.0.1:18100"
	nginxHTTP    = "127.0.0.1:18101"
	nginxHTTPS   = "127.0.0.1:18102"
	haproxyHTTP  = "127.0.0.1:18103"
	haproxyHTTPS = "127.0.0.1:18104"
	edgeAdmin    = "127.0.0.1:18180"
	edgeIP       = "192.0.2.1"
	edgeHTTP     = edgeIP + ":80"
	edgeHTTPS    = edgeIP + ":443"
	// originBody is what the origin answers, 22 bytes.
	originBody = "hello from the origin\n"
)

// proxyOpts are how a scenario wants its proxies.
type proxyOpts struct {
	accessLog bool // an access log to a file in each
	http3     bool // edgeproxy also serves HTTP/3 on UDP 443
}

// proxy is a running system under test.
type proxy struct {
	name  string
	proc  *harness.Proc
	plain string // host:port of cleartext HTTP/1.1
	tls   string // host:port of TLS (HTTP/1.1 and HTTP/2 by ALPN)
}

// fixture holds what the http scenarios run; stop stops it all.
type fixture struct {
	c        *harness.Ctx
	dir      string
	cert     string
	key      string
	combined string // cert and key in one file, for HAProxy
	opts     proxyOpts
	origin   *harness.Proc
	proxies  map[string]*proxy
}

// newFixture writes the certificate and starts the origin.
func newFixture(c *harness.Ctx, opts proxyOpts) (*fixture, error) {
	f := &fixture{c: c, dir: c.Dir, opts: opts, proxies: map[string]*proxy{}}
	if err := reservePorts(httpPorts); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	f.cert, f.key, err = selfsigned.Write(f.dir, "edge", "bench.example", edgeIP, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	cb, err1 := os.ReadFile(f.cert)
	kb, err2 := os.ReadFile(f.key)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("read the certificate: %v %v", err1, err2)
	}
	f.combined = filepath.Join(f.dir, "edge-combined.pem")
	if err := os.WriteFile(f.combined, append(cb, kb...), 0o600); err != nil {
		return nil, err
	}
	f.origin, err = startNginx(filepath.Join(f.dir, "origin"), harness.LoadCPU,
		`server { listen `+originAddr+` backlog=4096; location / { return 200 "`+strings.TrimSuffix(originBody, "\n")+`\n"; } }`)
	if err != nil {
		return nil, err
	}
	if err := f.origin.WaitTCP(originAddr); err != nil {
		f.stop()
		return nil, err
	}
	return f, nil
}

// start starts the named systems (edgeproxy, nginx, haproxy) that are not
// running yet.
// startFixture is newFixture with every http system started.
func startFixture(c *harness.Ctx, opts proxyOpts) (*fixture, error) {
	f, err := newFixture(c, opts)
	if err != nil {
		return nil, err
	}
	if err := f.start(httpSystems...); err != nil {
		f.stop()
		return nil, err
	}
	return f, nil
}

// alternate measures every http system round after round with load: the
// system's CPU time over the units load served.
func (f *fixture) alternate(c *harness.Ctx, r *harness.Result, load func(p *proxy) (loadResult, error)) error {
	return harness.Alternate(c, r, httpSystems, func(sys string, round int) (map[string]float64, error) {
		p := f.proxies[sys]
		before := p.proc.CPU()
		lr, err := load(p)
		if errors.Is(err, errLoadHung) && sys == "edgeproxy" {
			// Beside the run's scratch directory, which goes at its end.
			file := filepath.Join(os.TempDir(), fmt.Sprintf("edgebench-%s-edgeproxy-hung.txt", time.Now().Format("20060102-150405")))
			err = fmt.Errorf("%w\n%s", err, dumpGoroutines(p.proc, file))
		}
		if err != nil {
			return nil, err
		}
		return measured(sys, lr, p.proc.CPU()-before)
	})
}

// dumpGoroutines ends a Go system under test with SIGQUIT, which makes it
// write every goroutine's stack, and saves what it wrote to file: what the
// process was doing when a load generator waited on it in vain. It
// returns a line saying where the dump is.
func dumpGoroutines(p *harness.Proc, file string) string {
	if err := p.Signal(syscall.SIGQUIT); err != nil {
		return "no goroutine dump: " + err.Error()
	}
	exited := make(chan struct{})
	go func() { p.Cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		p.Kill()
		<-exited
	}
	if err := os.WriteFile(file, []byte(p.Out.String()), 0o644); err != nil {
		return "no goroutine dump: " + err.Error()
	}
	return "edgeproxy's goroutines when it was stopped: " + file
}

func (f *fixture) start(names ...string) error {
	for _, n := range names {
		if f.proxies[n] != nil {
			continue
		}
		p, err := f.startOne(n)
		if err != nil {
			return err
		}
		f.proxies[n] = p
	}
	return nil
}

// restart stops the named system and starts it afresh.
func (f *fixture) restart(name string) (*proxy, error) {
	if p := f.proxies[name]; p != nil {
		p.proc.Stop()
		delete(f.proxies, name)
	}
	if err := f.start(name); err != nil {
		return nil, err
	}
	return f.proxies[name], nil
}

func (f *fixture) startOne(name string) (*proxy, error) {
	dir := filepath.Join(f.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var p *proxy
	var err error
	switch name {
	case "edgeproxy":
		p, err = f.startEdgeproxy(dir)
	case "nginx":
		p, err = f.startNginxProxy(dir)
	case "haproxy":
		p, err = f.startHAProxy(dir)
	default:
		return nil, fmt.Errorf("no system %q", name)
	}
	if err != nil {
		return nil, err
	}
	for _, a := range []string{p.plain, p.tls} {
		if err := p.proc.WaitTCP(a); err != nil {
			p.proc.Stop()
			return nil, err
		}
	}
	return p, nil
}

func (f *fixture) startEdgeproxy(dir string) (*proxy, error) {
	accessLog := `"off"`
	if f.opts.accessLog {
		accessLog = strconv.Quote(filepath.Join(dir, "access.log"))
	}
	h3 := ""
	if f.opts.http3 {
		h3 = "\n  http3: true\n  http3_port: 443"
	}
	cfg := filepath.Join(dir, "edgeproxy.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`admin: {listen: %q}
dispatch: {pin_dir: ""}
store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: cdn}]
cdn:
  http_ports: [80]
  https_ports: [443]%s
  access_log: %s
  timeouts: {idle: 120s}
  certificates: [{cert_file: %q, key_file: %q}]
  sites: [{hosts: ["*"], origins: ["http://%s"]}]
`, edgeAdmin, h3, accessLog, f.cert, f.key, originAddr)), 0o644); err != nil {
		return nil, err
	}
	proc, err := harness.Start("edgeproxy", harness.SUTCPU, nil, f.c.Edgeproxy, "run", "--config", cfg)
	if err != nil {
		return nil, err
	}
	if err := proc.WaitReady(edgeAdmin); err != nil {
		proc.Stop()
		return nil, err
	}
	return &proxy{name: "edgeproxy", proc: proc, plain: edgeHTTP, tls: edgeHTTPS}, nil
}

func (f *fixture) startNginxProxy(dir string) (*proxy, error) {
	log := "access_log off;"
	if f.opts.accessLog {
		log = "access_log " + filepath.Join(dir, "access.log") + " combined buffer=64k flush=1s;"
	}
	proc, err := startNginx(dir, harness.SUTCPU, fmt.Sprintf(`upstream origin { server %s; keepalive 256; keepalive_requests 1000000; }
  ssl_certificate %s;
  ssl_certificate_key %s;
  ssl_protocols TLSv1.3;
  ssl_session_cache off;
  ssl_session_tickets off;
  http2_max_requests 1000000;
  keepalive_timeout 120s;
  server {
    listen %s backlog=4096;
    listen %s ssl http2 backlog=4096;
    %s
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }`, originAddr, f.cert, f.key, nginxHTTP, nginxHTTPS, log))
	if err != nil {
		return nil, err
	}
	return &proxy{name: "nginx", proc: proc, plain: nginxHTTP, tls: nginxHTTPS}, nil
}

func (f *fixture) startHAProxy(dir string) (*proxy, error) {
	logGlobal, logDefaults := "", ""
	if f.opts.accessLog {
		// HAProxy writes no log files: it logs to syslog sockets or to
		// its stdout, which the wrapper below sends to a file.
		logGlobal = "log stdout format raw local0 info"
		logDefaults = "log global\n  option httplog"
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global
  nbthread 1
  maxconn 9000
  ssl-default-bind-options ssl-min-ver TLSv1.3
  tune.ssl.cachesize 0
  %s
defaults
  mode http
  %s
  timeout connect 5s
  timeout client 120s
  timeout server 60s
  timeout http-keep-alive 120s
  maxconn 9000
frontend fe
  bind %s backlog 4096
  bind %s ssl crt %s alpn h2,http/1.1 no-tls-tickets backlog 4096
  default_backend origin
backend origin
  http-reuse always
  server o1 %s
`, logGlobal, logDefaults, haproxyHTTP, haproxyHTTPS, f.combined, originAddr)), 0o644); err != nil {
		return nil, err
	}
	argv := []string{"haproxy", "-db", "-f", cfg}
	if f.opts.accessLog {
		argv = append([]string{"sh", "-c", `exec "$@" >` + filepath.Join(dir, "access.log"), "sh"}, argv...)
	}
	proc, err := harness.Start("haproxy", harness.SUTCPU, nil, argv...)
	if err != nil {
		return nil, err
	}
	return &proxy{name: "haproxy", proc: proc, plain: haproxyHTTP, tls: haproxyHTTPS}, nil
}

// httpPorts are the fixture's ports, kept out of the ephemeral range: a
// client's connection on one of them would stop a proxy from listening.
const httpPorts = "18100-18199"

// reservePorts adds ports to the namespace's ip_local_reserved_ports.
func reservePorts(ports string) error {
	const key = "/proc/sys/net/ipv4/ip_local_reserved_ports"
	b, err := os.ReadFile(key)
	if err != nil {
		return err
	}
	cur := strings.TrimSpace(string(b))
	if slices.Contains(strings.Split(cur, ","), ports) {
		return nil
	}
	if cur != "" {
		ports = cur + "," + ports
	}
	if err := os.WriteFile(key, []byte(ports), 0o644); err != nil {
		return fmt.Errorf("reserve ports %s: %w", ports, err)
	}
	return nil
}

// stop stops every process of the fixture.
func (f *fixture) stop() {
	for n, p := range f.proxies {
		p.proc.Stop()
		delete(f.proxies, n)
	}
	f.origin.Stop()
}

// startNginx starts nginx, master and one worker, on cpu, with the http{}
// body given, its files under dir.
func startNginx(dir string, cpu int, httpBody string) (*harness.Proc, error) {
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  keepalive_requests 1000000;
  %[2]s
}
`, dir, httpBody)), 0o644); err != nil {
		return nil, err
	}
	return harness.Start("nginx", cpu, nil, "nginx", "-p", dir, "-c", conf)
}

// loadResult is what a load generator reports.
type loadResult struct {
	units  float64 // requests (or connections) that succeeded
	failed float64
	secs   float64
}

var (
	wrkTotal  = regexp.MustCompile(`([0-9]+) requests in ([0-9.]+)(us|ms|s|m)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: ([0-9]+)`)
	wrkSocket = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)

	h2Finished = regexp.MustCompile(`finished in ([0-9.]+)(us|ms|s|m),`)
	h2Requests = regexp.MustCompile(`requests: [0-9]+ total, [0-9]+ started, [0-9]+ done, ([0-9]+) succeeded, ([0-9]+) failed, ([0-9]+) errored, ([0-9]+) timeout`)
)

// loadSeconds is a load's duration in whole seconds (wrk and h2load take
// no less), at least one.
func loadSeconds(d time.Duration) int { return max(1, int(d.Round(time.Second)/time.Second)) }

func unitSeconds(v, unit string) float64 {
	f, _ := strconv.ParseFloat(v, 64)
	switch unit {
	case "us":
		return f / 1e6
	case "ms":
		return f / 1e3
	case "m":
		return f * 60
	}
	return f
}

// runLoad runs a load generator on LoadCPU to its end, for at most its
// load's duration plus loadSlack: one that runs on (a system under test
// that stopped answering some requests, which the tool waits for) is
// killed, and the error says so (errLoadHung).
func runLoad(d time.Duration, argv ...string) (string, error) {
	p, err := harness.Start(argv[0], harness.LoadCPU, nil, argv...)
	if err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- p.Cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(d + loadSlack):
		p.Kill()
		<-done
		return p.Out.String(), fmt.Errorf("%s: %w after %v: killed\n%s", strings.Join(argv, " "), errLoadHung, d+loadSlack, harness.Tail(p.Out.String()))
	}
	out := p.Out.String()
	if err != nil {
		return out, fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, harness.Tail(out))
	}
	return out, nil
}

// loadSlack is how long past its duration a load generator may take to
// finish its last requests and report.
var loadSlack = 30 * time.Second

var errLoadHung = errors.New("still running")

// wrk runs wrk (one thread, conns connections) against url for d.
func wrk(url string, conns int, d time.Duration, extra ...string) (loadResult, error) {
	argv := append([]string{"wrk", "-t1", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(loadSeconds(d)) + "s"}, extra...)
	out, err := runLoad(time.Duration(loadSeconds(d))*time.Second, append(argv, url)...)
	if err != nil {
		return loadResult{}, err
	}
	m := wrkTotal.FindStringSubmatch(out)
	if m == nil {
		return loadResult{}, fmt.Errorf("wrk: no total in:\n%s", out)
	}
	var r loadResult
	total, _ := strconv.ParseFloat(m[1], 64)
	r.secs = unitSeconds(m[2], m[3])
	if n := wrkNon2xx.FindStringSubmatch(out); n != nil {
		v, _ := strconv.ParseFloat(n[1], 64)
		r.failed += v
	}
	if s := wrkSocket.FindStringSubmatch(out); s != nil {
		for _, v := range s[1:] {
			f, _ := strconv.ParseFloat(v, 64)
			r.failed += f
		}
	}
	r.units = total - min(total, r.failed)
	return r, nil
}

// h2load runs h2load (one thread, conns connections of streams
// concurrent streams each) against an https url for d.
func h2load(url string, conns, streams int, d time.Duration) (loadResult, error) {
	out, err := runLoad(time.Duration(loadSeconds(d))*time.Second, "h2load", "-t1", "-c"+strconv.Itoa(conns), "-m"+strconv.Itoa(streams),
		"-D", strconv.Itoa(loadSeconds(d)), url)
	if err != nil {
		return loadResult{}, err
	}
	f, rq := h2Finished.FindStringSubmatch(out), h2Requests.FindStringSubmatch(out)
	if f == nil || rq == nil {
		return loadResult{}, fmt.Errorf("h2load: unexpected output:\n%s", out)
	}
	var r loadResult
	r.secs = unitSeconds(f[1], f[2])
	r.units, _ = strconv.ParseFloat(rq[1], 64)
	for _, v := range rq[2:] {
		x, _ := strconv.ParseFloat(v, 64)
		r.failed += x
	}
	if !strings.Contains(out, "Application protocol: h2") {
		return loadResult{}, fmt.Errorf("h2load did not speak h2:\n%s", out)
	}
	return r, nil
}

var sTimeConns = regexp.MustCompile(`([0-9]+) connections in [0-9.]+s;`)

// sTime runs procs openssl s_time clients at once, each making new TLS
// connections one after another for d, a full handshake each (-new: no
// session resumed) and one HTTP/1.0 request (-www /).
func sTime(addr string, procs int, d time.Duration) (loadResult, error) {
	var ps []*harness.Proc
	defer func() {
		for _, p := range ps {
			p.Stop()
		}
	}()
	start := time.Now()
	for range procs {
		p, err := harness.Start("openssl", harness.LoadCPU, nil, "openssl", "s_time", "-connect", addr,
			"-new", "-www", "/", "-time", strconv.Itoa(loadSeconds(d)))
		if err != nil {
			return loadResult{}, err
		}
		ps = append(ps, p)
	}
	var r loadResult
	for _, p := range ps {
		err := p.Cmd.Wait()
		out := p.Out.String()
		m := sTimeConns.FindStringSubmatch(out)
		if err != nil || m == nil {
			return loadResult{}, fmt.Errorf("openssl s_time -connect %s: %v\n%s", addr, err, harness.Tail(out))
		}
		n, _ := strconv.ParseFloat(m[1], 64)
		r.units += n
	}
	r.secs = time.Since(start).Seconds()
	return r, nil
}

// measured turns a load's result and the CPU the system used meanwhile
// into a round's metrics, and refuses a round where more than 1% failed.
func measured(sys string, lr loadResult, cpu time.Duration) (map[string]float64, error) {
	if lr.units <= 0 || lr.secs <= 0 {
		return nil, fmt.Errorf("%s: no successful work", sys)
	}
	if lr.failed > lr.units/100 {
		return nil, fmt.Errorf("%s: %.0f of %.0f failed", sys, lr.failed, lr.units+lr.failed)
	}
	return map[string]float64{
		harness.Rate:       lr.units / lr.secs,
		harness.CPUPerUnit: float64(cpu.Microseconds()) / lr.units,
		harness.Failed:     lr.failed,
	}, nil
}
