package scenarios

// The l4 scenarios' systems, origins and clients: edgeproxy's spectrum,
// HAProxy (mode tcp) and nginx stream in front of the same origins, an
// iperf3 server for bulk TCP, the echo origins of the small-message
// scenarios and their TCP round-trip client (the UDP clients are
// bench/load's UDP).
//
// The echo origins and the clients are goroutines of the harness process,
// not programs of their own: a 64-byte echo is a few lines of Go, and a
// process of its own would need a helper binary beside edgebench. While a
// round runs, every thread of the harness process is pinned to LoadCPU
// (pinSelf), so the origin and the load share the load generator's core, as
// a separate pinned program would; the system under test keeps SUTCPU.
//
// Every socket is created on the calling goroutine (listeners, client
// dials) and only then used from goroutines: in the smoke test the
// scenario runs on a goroutine locked to a thread in a namespace of its
// own, and sockets made on other threads would live in another namespace.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/bench/load"
)

// Ports of the l4 scenarios (18300-18399), one per role.
const (
	l4EdgeIP     = "203.0.113.1" // spectrum's edge, in 203.0.113.0/24
	l4SpecBulk   = 18300         // spectrum's edge ports
	l4SpecRR     = 18301
	l4SpecUDP    = 18302
	l4OriginBulk = 18310 // iperf3 -s
	l4OriginRR   = 18311 // TCP echo
	l4OriginUDP  = 18312 // UDP echo
	l4BulkSink   = 18313 // iperf3 -s on the SUT CPU: the ceiling's receiver
	l4HAProxy    = 18320 // +0 bulk, +1 rr
	l4Nginx      = 18330 // +0 bulk, +1 rr, +2 udp
	l4Admin      = 18340 // edgeproxy's admin API
)

func l4Loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
func l4Edge(port int) string     { return net.JoinHostPort(l4EdgeIP, strconv.Itoa(port)) }

// l4Env holds what a scenario started; stop ends it all.
type l4Env struct {
	c       *harness.Ctx
	procs   []*harness.Proc
	closers []io.Closer
	sut     map[string]*harness.Proc // system -> its process
}

func newL4Env(c *harness.Ctx) *l4Env { return &l4Env{c: c, sut: map[string]*harness.Proc{}} }

func (e *l4Env) stop() {
	for _, p := range slices.Backward(e.procs) {
		p.Stop()
	}
	for _, c := range e.closers {
		c.Close()
	}
}

func (e *l4Env) start(name string, cpu int, argv ...string) (*harness.Proc, error) {
	p, err := harness.Start(name, cpu, nil, argv...)
	if err != nil {
		return nil, err
	}
	e.procs = append(e.procs, p)
	return p, nil
}

func (e *l4Env) write(name, body string) (string, error) {
	p := filepath.Join(e.c.Dir, name)
	return p, os.WriteFile(p, []byte(body), 0o600)
}

// iperf3Server runs `iperf3 -s` on LoadCPU at the bulk origin's port, and
// another on SUTCPU at the sink's port (the ceiling's receiver).
func (e *l4Env) iperf3Server() error {
	for _, s := range []struct{ cpu, port int }{{harness.LoadCPU, l4OriginBulk}, {harness.SUTCPU, l4BulkSink}} {
		p, err := e.start("iperf3 -s", s.cpu, "iperf3", "-s", "-B", "127.0.0.1", "-p", strconv.Itoa(s.port))
		if err != nil {
			return err
		}
		if err := p.WaitTCP(l4Loopback(s.port)); err != nil {
			return err
		}
	}
	return nil
}

// edgeproxy runs the binary under test on SUTCPU with spectrum apps for
// the bulk, round-trip and UDP origins on 203.0.113.0/24.
func (e *l4Env) edgeproxy() error {
	cfg, err := e.write("edgeproxy.yaml", fmt.Sprintf(`admin: {listen: "%s"}
dispatch: {pin_dir: ""}
store: {path: ""}
prefixes: [{cidr: 203.0.113.0/24, service: spectrum}]
spectrum:
  apps:
    - {name: bulk, protocol: tcp, edge: 203.0.113.0/24, ports: "%d", origins: ["%s"]}
    - {name: rr, protocol: tcp, edge: 203.0.113.0/24, ports: "%d", origins: ["%s"]}
    - {name: udp, protocol: udp, edge: 203.0.113.0/24, ports: "%d", origins: ["%s"]}
`, l4Loopback(l4Admin), l4SpecBulk, l4Loopback(l4OriginBulk), l4SpecRR, l4Loopback(l4OriginRR), l4SpecUDP, l4Loopback(l4OriginUDP)))
	if err != nil {
		return err
	}
	p, err := e.start("edgeproxy", harness.SUTCPU, e.c.Edgeproxy, "run", "--config", cfg)
	if err != nil {
		return err
	}
	e.sut["edgeproxy"] = p
	return p.WaitReady(l4Loopback(l4Admin))
}

// haproxy runs HAProxy 2.6 in TCP mode, one thread, on SUTCPU.
func (e *l4Env) haproxy() error {
	cfg, err := e.write("haproxy.cfg", fmt.Sprintf(`global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen bulk
  bind %s
  server origin %s
listen rr
  bind %s
  server origin %s
`, l4Loopback(l4HAProxy), l4Loopback(l4OriginBulk), l4Loopback(l4HAProxy+1), l4Loopback(l4OriginRR)))
	if err != nil {
		return err
	}
	p, err := e.start("haproxy", harness.SUTCPU, "haproxy", "-f", cfg, "-db")
	if err != nil {
		return err
	}
	e.sut["haproxy"] = p
	return p.WaitTCP(l4Loopback(l4HAProxy + 1))
}

// nginx runs nginx's stream module, one worker, on SUTCPU: TCP for bulk
// and round trips, UDP to the UDP echo.
func (e *l4Env) nginx() error {
	dir := filepath.Join(e.c.Dir, "nginx")
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	cfg, err := e.write("nginx.conf", fmt.Sprintf(`%[1]s
worker_processes 1;
daemon off;
master_process on;
pid %[2]s/nginx.pid;
error_log %[2]s/logs/error.log warn;
events { worker_connections 4096; }
stream {
  server { listen %[3]s; proxy_pass %[4]s; }
  server { listen %[5]s; proxy_pass %[6]s; }
  server { listen %[7]s udp; proxy_pass %[8]s; proxy_timeout 10s; }
}
`, harness.NginxStreamModule(), dir, l4Loopback(l4Nginx), l4Loopback(l4OriginBulk),
		l4Loopback(l4Nginx+1), l4Loopback(l4OriginRR), l4Loopback(l4Nginx+2), l4Loopback(l4OriginUDP)))
	if err != nil {
		return err
	}
	p, err := e.start("nginx", harness.SUTCPU, "nginx", "-p", dir, "-e", filepath.Join(dir, "logs", "error.log"), "-c", cfg)
	if err != nil {
		return err
	}
	e.sut["nginx"] = p
	return p.WaitTCP(l4Loopback(l4Nginx + 1))
}

// pinSelf pins every thread of the harness process to cpu (new threads
// inherit it) and returns a function that puts the previous affinity back.
func l4PinSelf(cpu int) (restore func()) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return func() {}
	}
	set.Set(cpu)
	apply := func(s *unix.CPUSet) {
		for range 2 { // threads started meanwhile inherit from one not yet moved
			tasks, _ := os.ReadDir("/proc/self/task")
			for _, t := range tasks {
				if tid, err := strconv.Atoi(t.Name()); err == nil {
					unix.SchedSetaffinity(tid, s)
				}
			}
		}
	}
	apply(&set)
	return func() { apply(&old) }
}

// tcpEcho listens on addr and echoes every connection back, through a
// small buffer (no splice: io.Copy between sockets would).
func (e *l4Env) tcpEcho(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	e.closers = append(e.closers, ln)
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	e.closers = append(e.closers, l4CloserFunc(func() error {
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
		return nil
	}))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			go func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return nil
}

type l4CloserFunc func() error

func (f l4CloserFunc) Close() error { return f() }

// udpEcho answers every datagram on addr with itself.
func (e *l4Env) udpEcho(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	e.closers = append(e.closers, pc)
	u := pc.(*net.UDPConn)
	u.SetReadBuffer(4 << 20)
	u.SetWriteBuffer(4 << 20)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := u.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			u.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return nil
}

// iperf3 runs one iperf3 client against addr on LoadCPU (for d, or for a
// fixed size in tiny mode, iperf3's -t being whole seconds) and returns the
// bytes the server received and their rate in Gbit/s.
func l4Iperf3(tiny bool, addr string, d time.Duration) (bytes, gbits float64, err error) {
	return l4Iperf3On(harness.LoadCPU, tiny, addr, d)
}

// l4Iperf3On is l4Iperf3 with the client on cpu.
func l4Iperf3On(cpu int, tiny bool, addr string, d time.Duration) (bytes, gbits float64, err error) {
	// The server takes one test at a time and may still be ending the
	// previous one: "the server is busy", try again shortly.
	for try := 0; ; try++ {
		bytes, gbits, err = l4Iperf3Once(cpu, tiny, addr, d)
		if err == nil || !strings.Contains(err.Error(), "server is busy") || try == 50 {
			return bytes, gbits, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func l4Iperf3Once(cpu int, tiny bool, addr string, d time.Duration) (bytes, gbits float64, err error) {
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"iperf3", "-c", host, "-p", port, "-J"}
	if tiny {
		args = append(args, "-n", "256M")
	} else {
		args = append(args, "-t", strconv.Itoa(max(1, int(d.Seconds()))))
	}
	p, err := harness.Start("iperf3 -c", cpu, nil, args...)
	if err != nil {
		return 0, 0, err
	}
	werr := p.Cmd.Wait()
	var out struct {
		Error string `json:"error"`
		End   struct {
			Received struct {
				Bytes float64 `json:"bytes"`
				BPS   float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(p.Out.String()), &out); err != nil || out.Error != "" || werr != nil {
		return 0, 0, fmt.Errorf("iperf3 -c %s: %v %v %s: %s", addr, werr, err, out.Error, p.Tail())
	}
	if out.End.Received.Bytes <= 0 {
		return 0, 0, fmt.Errorf("iperf3 -c %s: nothing received: %s", addr, p.Tail())
	}
	return out.End.Received.Bytes, out.End.Received.BPS / 1e9, nil
}

// l4TcpRR opens conns connections to addr and, on each, writes size bytes
// and reads the size-byte echo, back to back, for d: a closed loop (the
// load package's TCPConnect opens a connection per request; these stay
// open). It returns the round trips, the time they took and their
// latencies.
func l4TcpRR(addr string, conns, size int, d time.Duration) (int64, time.Duration, *load.Histogram, error) {
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range conns {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return 0, 0, nil, err
		}
		cs = append(cs, c)
	}
	var wg sync.WaitGroup
	hists := make([]*load.Histogram, conns)
	errs := make([]error, conns)
	start := time.Now()
	deadline := start.Add(d)
	for i, c := range cs {
		hists[i] = load.NewHistogram()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(deadline.Add(5 * time.Second))
			msg, buf := make([]byte, size), make([]byte, size)
			for {
				t := time.Now()
				if t.After(deadline) {
					return
				}
				if _, err := c.Write(msg); err != nil {
					errs[i] = err
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					errs[i] = err
					return
				}
				hists[i].Record(time.Since(t))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	h := load.NewHistogram()
	for _, x := range hists {
		h.Merge(x)
	}
	if err := errors.Join(errs...); err != nil {
		return 0, el, nil, fmt.Errorf("tcp round trips to %s: %w", addr, err)
	}
	if h.Count() == 0 {
		return 0, el, nil, fmt.Errorf("no round trip to %s", addr)
	}
	return h.Count(), el, h, nil
}

// l4MS is d in milliseconds.
func l4MS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// l4MinCPU is the least CPU a system under test must have used in a
// measurement whose CPU per unit is reported: /proc counts in 10 ms ticks,
// and a tiny run on a busy machine may see none.
const l4MinCPU = 50 * time.Millisecond

// l4Enough runs chunk again until cpu reports at least l4MinCPU or chunk
// ran five times (always once; only once with cpu nil: direct).
func l4Enough(cpu func() time.Duration, chunk func() error) error {
	for i := 0; ; i++ {
		if err := chunk(); err != nil {
			return err
		}
		if cpu == nil || cpu() >= l4MinCPU || i == 4 {
			return nil
		}
	}
}
