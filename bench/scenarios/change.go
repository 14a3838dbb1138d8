package scenarios

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/store"
)

// The change-safety group: edgeproxy alone (no peer changes its bindings
// under load), the primary metric "failed", which must be 0.
//
//   - change-move: HTTP/1.1 through the cdn while a /25 of the loaded
//     prefix is PATCHed cdn → spectrum → cdn … over the admin API.
//     Keep-alive connections to addresses of the moving /25 end between
//     requests once it leaves the cdn (a move completes), as clients see
//     a keep-alive connection close: they reconnect, and a reconnection
//     refused while spectrum owns the range is the move working. A request
//     that fails otherwise (cut short, timed out, not 200) counts as
//     failed; so does any failure of the new connections, one request
//     each, to the other /25 (never moved). A round whose moves ended no
//     connection fails.
//   - change-reload: the same load while edgeproxy gets a SIGHUP every
//     250 ms.
//   - change-upgrade: the same load while the serving edgeproxy gets a
//     SIGUSR2 (a live upgrade to the binary on disk) every 1.2 s. Keep-alive
//     connections end between requests as the old process drains (ended,
//     not failed); the new-connection load must never fail.
//   - change-latency: with 10k / 100k / 1M bindings loaded from the store
//     file at start, the PATCH and POST round trips, and the time from
//     sending a PATCH to the first new connection that sees the new owner
//     (probing connections in a loop).
func init() {
	harness.Register(harness.Scenario{Name: "change-move", Group: "change", Run: func(c *harness.Ctx, r *harness.Result) error {
		return runChangeSafety(c, r, false)
	}})
	harness.Register(harness.Scenario{Name: "change-reload", Group: "change", Run: func(c *harness.Ctx, r *harness.Result) error {
		return runChangeSafety(c, r, true)
	}})
	harness.Register(harness.Scenario{Name: "change-upgrade", Group: "change", Run: runChangeUpgrade})
	harness.Register(harness.Scenario{Name: "change-latency", Group: "change", Run: runChangeLatency})
	harness.Register(harness.Scenario{Name: "change-batch", Group: "change", Run: runChangeBatch})
}

const (
	changeAdmin    = "127.0.0.1:18410"
	changeOrigin   = "127.0.0.1:18490"
	changeHTTPPort = 18480
	changeSpectrum = 18481 // a spectrum app's port: spectrum serves, but not changeHTTPPort
	changePrefix   = "198.51.100.0/24"
	changeMoved    = "198.51.100.0/25"   // moves; keep-alive load on it
	changeStill    = "198.51.100.128/25" // never moves; new-connection load on it
	changeProbe    = "198.51.100.77/32"  // change-latency's moved binding
)

// changeCapacity is the binding capacity the change scenarios need: their
// largest store, with room.
const changeCapacity = 1<<20 + 1<<16

// changeConfig is edgeproxy's configuration for the change scenarios.
func changeConfig(store string) string {
	return fmt.Sprintf(`node: bench
admin: {listen: %q}
shutdown_grace: 2s
dispatch: {pin_dir: "", binding_capacity: %d}
store: {path: %q}
prefixes: [{cidr: %s, service: cdn}]
cdn:
  http_ports: [%d]
  sites:
    - hosts: ["*"]
      origins: ["http://%s"]
spectrum:
  apps: [{name: bench, protocol: tcp, edge: %s, ports: "%d", origins: ["%s"]}]
`, changeAdmin, changeCapacity, store, changePrefix, changeHTTPPort, changeOrigin, changePrefix, changeSpectrum, changeOrigin)
}

// chgStartOrigin serves 200 "ok" on changeOrigin.
func chgStartOrigin() (stop func(), err error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", changeOrigin)
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "2")
		w.Write([]byte("ok"))
	})}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}

// chgStartEdgeproxy writes the configuration, starts edgeproxy on the SUT CPU
// and waits for /readyz.
func chgStartEdgeproxy(c *harness.Ctx, store string, wait time.Duration) (*harness.Proc, string, error) {
	cfg := filepath.Join(c.Dir, "change.yaml")
	if err := os.WriteFile(cfg, []byte(changeConfig(store)), 0o600); err != nil {
		return nil, "", err
	}
	p, err := harness.Start("edgeproxy", harness.SUTCPU, nil, c.Edgeproxy, "run", "--config", cfg)
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(wait)
	for {
		code, _, err := chgCall("GET", "/readyz", "")
		if err == nil && code == 200 {
			return p, cfg, nil
		}
		if p.Exited() || time.Now().After(deadline) {
			p.Stop()
			out := p.Out.String()
			if len(out) > 2000 {
				out = out[:2000] + " …"
			}
			return nil, "", fmt.Errorf("edgeproxy not ready after %v (%d, %v):\n%s", wait, code, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chgCall makes one admin API request on a connection of its own, dialled on
// the calling goroutine (so in the run's namespace), and returns the status
// and the body.
func chgCall(method, path, body string) (int, []byte, error) {
	conn, err := net.DialTimeout("tcp", changeAdmin, 5*time.Second)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(120 * time.Second))
	req, _ := http.NewRequest(method, "http://"+changeAdmin+path, strings.NewReader(body))
	req.Close = true
	if err := req.Write(conn); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// chgCallOK is call that wants a 200 and decodes the body into out (if not
// nil).
func chgCallOK(method, path, body string, out any) (time.Duration, error) {
	start := time.Now()
	code, b, err := chgCall(method, path, body)
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if code != 200 {
		return took, fmt.Errorf("%s %s: %d %s", method, path, code, bytes.TrimSpace(b))
	}
	if out != nil {
		env := struct {
			Result any `json:"result"`
		}{out}
		if err := json.Unmarshal(b, &env); err != nil {
			return took, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return took, nil
}

type chgBinding struct {
	ID       string `json:"id"`
	PrefixID string `json:"prefix_id"`
}

// chgAddBinding makes a binding of cidr (in changePrefix) to svc.
func chgAddBinding(cidr, svc string) (chgBinding, time.Duration, error) {
	var b chgBinding
	pid := bindings.PrefixID(netip.MustParsePrefix(changePrefix))
	took, err := chgCallOK("POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"`+cidr+`","service_id":"`+svc+`"}`, &b)
	return b, took, err
}

func chgMoveBinding(b chgBinding, svc string) (time.Duration, error) {
	return chgCallOK("PATCH", "/v1/prefixes/"+b.PrefixID+"/bindings/"+b.ID, `{"service_id":"`+svc+`"}`, nil)
}

// chgLoadStats counts a load's requests.
type chgLoadStats struct {
	ok, failed atomic.Int64
	ended      atomic.Int64 // keep-alive connections the server closed between requests
	refused    atomic.Int64 // reconnections refused while the range was not the cdn's
	mu         sync.Mutex
	errs       []string // the first few failures
}

// endedBetween reports whether a keep-alive request failed because the
// server had closed the connection before any byte of its response: what
// an HTTP client takes as the connection's end, and sends again on a new
// one.
func endedBetween(err error) bool {
	return errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (s *chgLoadStats) fail(err error) {
	s.failed.Add(1)
	s.mu.Lock()
	if len(s.errs) < 5 {
		s.errs = append(s.errs, err.Error())
	}
	s.mu.Unlock()
}

var chgGet = []byte("GET / HTTP/1.1\r\nHost: bench.example\r\n\r\n")
var chgGetClose = []byte("GET / HTTP/1.1\r\nHost: bench.example\r\nConnection: close\r\n\r\n")

// chgExchange sends one request on conn and reads a 200 response (the
// change and http-idle-memory scenarios' keep-alive requests). An error
// once a byte of the response came is never endedBetween.
func chgExchange(conn net.Conn, br *bufio.Reader, req []byte) error {
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(req); err != nil {
		return err
	}
	// Nothing at all (the connection's end) apart from a head cut short:
	// ReadResponse reports both as io.ErrUnexpectedEOF.
	if _, err := br.Peek(1); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("the response's head cut short: %v", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("the response cut short: %v", err)
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

func chgDialHTTP(addr string) (net.Conn, *bufio.Reader, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	return conn, bufio.NewReader(conn), nil
}

// chgRunLoad runs, until stop is closed, keepAlive workers on connections
// opened (before it returns) to addresses of changeMoved, and one worker
// making a new connection per request to addresses of changeStill. done
// is closed when every worker has ended.
func chgRunLoad(keepAlive int, stop <-chan struct{}) (*chgLoadStats, <-chan struct{}, error) {
	st := &chgLoadStats{}
	var wg sync.WaitGroup
	errc := make(chan error, keepAlive)
	for i := range keepAlive {
		addr := fmt.Sprintf("198.51.100.%d:%d", 1+i, changeHTTPPort)
		wg.Add(1)
		nsSpawn(func() {
			defer wg.Done()
			conn, br, err := chgDialHTTP(addr)
			errc <- err
			if err != nil {
				return
			}
			defer func() { conn.Close() }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := chgExchange(conn, br, chgGet); err != nil {
					if !endedBetween(err) {
						st.fail(fmt.Errorf("keep-alive %s: %w", addr, err))
					} else {
						st.ended.Add(1)
					}
					conn.Close()
					// Reconnect; refused while the range is not the cdn's.
					for {
						if conn, br, err = chgDialHTTP(addr); err == nil {
							break
						}
						if !errors.Is(err, syscall.ECONNREFUSED) {
							st.fail(fmt.Errorf("reconnect %s: %w", addr, err))
						} else {
							st.refused.Add(1)
						}
						select {
						case <-stop:
							return
						case <-time.After(5 * time.Millisecond):
						}
					}
					continue
				}
				st.ok.Add(1)
			}
		})
	}
	for range keepAlive {
		if err := <-errc; err != nil {
			return nil, nil, fmt.Errorf("keep-alive connection: %w", err)
		}
	}
	wg.Add(1)
	nsSpawn(func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			addr := fmt.Sprintf("198.51.100.%d:%d", 129+i%120, changeHTTPPort)
			conn, br, err := chgDialHTTP(addr)
			if err != nil {
				st.fail(fmt.Errorf("new connection %s: %w", addr, err))
				continue
			}
			if err := chgExchange(conn, br, chgGetClose); err != nil {
				st.fail(fmt.Errorf("new connection %s: %w", addr, err))
			} else {
				st.ok.Add(1)
			}
			conn.Close()
		}
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return st, done, nil
}

var chgReloadsRE = regexp.MustCompile(`(?m)^edgeproxy_config_reloads_total\{result="(ok|error)"\} (\S+)$`)

// chgReloads reads edgeproxy's reload counters.
func chgReloads() (ok, failed float64, err error) {
	code, b, err := chgCall("GET", "/metrics", "")
	if err != nil || code != 200 {
		return 0, 0, fmt.Errorf("metrics: %d %v", code, err)
	}
	for _, m := range chgReloadsRE.FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		if m[1] == "ok" {
			ok = v
		} else {
			failed = v
		}
	}
	return ok, failed, nil
}

func runChangeSafety(c *harness.Ctx, r *harness.Result, sighup bool) error {
	const keepAlive = 4
	r.Unit = "request"
	r.Primary = harness.Failed
	r.Secondary = harness.Rate
	r.Params["keepalive_connections"] = keepAlive
	r.Params["new_connection_workers"] = 1
	d := c.Mode.D(4 * time.Second)
	r.Params["round_s"] = d.Seconds()
	if sighup {
		r.Title = "failed requests during SIGHUP reloads under load (must be 0)"
		r.Params["reload_every_ms"] = 250
	} else {
		r.Title = "failed requests while a /25 moves cdn↔spectrum under load (must be 0)"
		r.Params["moved"] = changeMoved
		r.Params["still"] = changeStill
	}
	r.Notes = append(r.Notes, "keep-alive connections to "+changeMoved+" opened before the changes; new connections (one request each) to "+changeStill+"; every error, non-200 or refused connection counts as failed, except on "+changeMoved+": a keep-alive connection the cdn closes between requests after a move (ended) and a reconnection refused while spectrum owns the range (refused)")
	stopOrigin, err := chgStartOrigin()
	if err != nil {
		return err
	}
	defer stopOrigin()
	ep, _, err := chgStartEdgeproxy(c, filepath.Join(c.Dir, "change-bindings.db"), 30*time.Second)
	if err != nil {
		return err
	}
	defer ep.Stop()
	r.Versions["edgeproxy"] = harness.Version(c.Edgeproxy)
	var moved chgBinding
	if !sighup {
		if moved, _, err = chgAddBinding(changeMoved, "cdn"); err != nil {
			return err
		}
	}
	return harness.Alternate(c, r, []string{"edgeproxy"}, func(string, int) (map[string]float64, error) {
		stop := make(chan struct{})
		cpu0 := ep.CPU()
		start := time.Now()
		st, done, err := chgRunLoad(keepAlive, stop)
		if err != nil {
			return nil, err
		}
		m := map[string]float64{}
		var changeErr error
		if sighup {
			ok0, bad0, err := chgReloads()
			if err != nil {
				close(stop)
				<-done
				return nil, err
			}
			n := 0
			for time.Since(start) < d {
				if err := ep.Signal(syscall.SIGHUP); err != nil {
					changeErr = err
					break
				}
				n++
				time.Sleep(250 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // the last reload's end
			ok1, bad1, err := chgReloads()
			if err != nil && changeErr == nil {
				changeErr = err
			}
			m["reloads"], m["reloads_ok"], m["reload_errors"] = float64(n), ok1-ok0, bad1-bad0
			if changeErr == nil && (ok1-ok0 == 0 || bad1 > bad0) {
				changeErr = fmt.Errorf("%d SIGHUPs: %v reloads ok, %v failed", n, ok1-ok0, bad1-bad0)
			}
		} else {
			var rtts []float64
			for time.Since(start) < d {
				for _, svc := range []string{"spectrum", "cdn"} {
					took, err := chgMoveBinding(moved, svc)
					if err != nil {
						changeErr = err
						break
					}
					rtts = append(rtts, float64(took.Microseconds())/1000)
					if svc == "spectrum" && len(rtts) == 1 {
						// The move reached the data plane: a new
						// connection to the moved range is refused
						// (spectrum serves no app on the port).
						if conn, err := net.DialTimeout("tcp", fmt.Sprintf("198.51.100.100:%d", changeHTTPPort), time.Second); err == nil {
							conn.Close()
							changeErr = errors.New("a new connection to the moved range was accepted while spectrum owned it")
						} else if !errors.Is(err, syscall.ECONNREFUSED) {
							changeErr = fmt.Errorf("probe of the moved range: %w", err)
						}
					}
				}
				if changeErr != nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			m["moves"] = float64(len(rtts))
			m["patch_ms"] = harness.Median(rtts)
			m["ended"], m["refused"] = float64(st.ended.Load()), float64(st.refused.Load())
			if changeErr == nil && len(rtts) > 0 && st.ended.Load() == 0 {
				changeErr = fmt.Errorf("%d moves ended no keep-alive connection on the moved range: the moves never completed", len(rtts))
			}
		}
		close(stop)
		<-done
		secs := time.Since(start).Seconds()
		if changeErr != nil {
			return nil, changeErr
		}
		if err := chgTally(c, r.Scenario, st, secs, m); err != nil {
			return nil, err
		}
		m[harness.CPUPerUnit] = float64((ep.CPU() - cpu0).Microseconds()) / float64(st.ok.Load())
		return m, nil
	})
}

// chgTally puts a round's load into m: the failed requests, all of them,
// and the rate of those that succeeded over secs. A round in which none
// succeeded is an error; failures are logged.
func chgTally(c *harness.Ctx, scenario string, st *chgLoadStats, secs float64, m map[string]float64) error {
	ok, failed := st.ok.Load(), st.failed.Load()
	if ok == 0 {
		return fmt.Errorf("no request succeeded: %v", st.errs)
	}
	if failed > 0 {
		c.Log("%s: %d failed: %s", scenario, failed, strings.Join(st.errs, "; "))
	}
	m[harness.Failed] = float64(failed)
	m["requests"] = float64(ok + failed)
	m[harness.Rate] = float64(ok) / secs
	return nil
}

// chgServing returns the pid GET /v1/status names and its state.
func chgServing() (int, string, error) {
	var st struct {
		PID   int    `json:"pid"`
		State string `json:"state"`
	}
	if _, err := chgCallOK("GET", "/v1/status", "", &st); err != nil {
		return 0, "", err
	}
	return st.PID, st.State, nil
}

// runChangeUpgrade is change-upgrade: live upgrades (SIGUSR2) under the
// change scenarios' load. The processes are followed by pid: each upgrade
// makes a new one, the child of the one before.
func runChangeUpgrade(c *harness.Ctx, r *harness.Result) error {
	const keepAlive = 4
	r.Unit = "request"
	r.Primary = harness.Failed
	r.Secondary = harness.Rate
	r.Title = "failed requests during SIGUSR2 live upgrades under load (must be 0)"
	r.Params["keepalive_connections"] = keepAlive
	r.Params["new_connection_workers"] = 1
	r.Params["upgrade_every_ms"] = 1200
	d := c.Mode.D(4 * time.Second)
	r.Params["round_s"] = d.Seconds()
	r.Notes = append(r.Notes, "keep-alive connections to "+changeMoved+", new connections (one request each) to "+changeStill+"; every error, non-200 or refused connection counts as failed, except a keep-alive connection the old process closes between requests as it drains (ended)",
		"upgrade_ms: median time from SIGUSR2 to GET /v1/status naming the new process, serving")
	stopOrigin, err := chgStartOrigin()
	if err != nil {
		return err
	}
	defer stopOrigin()
	ep, _, err := chgStartEdgeproxy(c, filepath.Join(c.Dir, "change-bindings.db"), 30*time.Second)
	if err != nil {
		return err
	}
	defer func() {
		// The serving process is the last upgrade's: stop it, then the
		// first (already gone unless an upgrade failed).
		if pid, _, err := chgServing(); err == nil && pid != ep.Pid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		ep.Stop()
	}()
	r.Versions["edgeproxy"] = harness.Version(c.Edgeproxy)
	return harness.Alternate(c, r, []string{"edgeproxy"}, func(string, int) (map[string]float64, error) {
		stop := make(chan struct{})
		start := time.Now()
		st, done, err := chgRunLoad(keepAlive, stop)
		if err != nil {
			return nil, err
		}
		var took []float64
		var upErr error
		for time.Since(start) < d && upErr == nil {
			time.Sleep(1200 * time.Millisecond)
			pid, _, err := chgServing()
			if err != nil {
				upErr = err
				break
			}
			t0 := time.Now()
			if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
				upErr = err
				break
			}
			for {
				if now, state, err := chgServing(); err == nil && now != pid && state == "serving" {
					break
				}
				if time.Since(t0) > 15*time.Second {
					upErr = fmt.Errorf("no new process serves 15 s after SIGUSR2 to %d", pid)
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			took = append(took, float64(time.Since(t0).Microseconds())/1000)
		}
		close(stop)
		<-done
		secs := time.Since(start).Seconds()
		if upErr != nil {
			return nil, upErr
		}
		m := map[string]float64{"upgrades": float64(len(took)), "upgrade_ms": harness.Median(took), "ended": float64(st.ended.Load())}
		if err := chgTally(c, r.Scenario, st, secs, m); err != nil {
			return nil, err
		}
		return m, nil
	})
}

// chgStore writes a store of n API-made /128 bindings to cdn in
// 1,000 spectrum /48s from 2001:db8:4500::/48 on (none carries traffic).
func chgStore(path string, n int) error {
	st := &bindings.State{}
	const prefixes = 1000
	for i := range prefixes {
		a := netip.MustParseAddr("2001:db8:4500::").As16()
		a[4], a[5] = byte((0x4500+i)>>8), byte(0x4500+i)
		st.Prefixes = append(st.Prefixes, bindings.NewPrefix(netip.PrefixFrom(netip.AddrFrom16(a), 48), bindings.Spectrum, bindings.FromAPI))
	}
	st.Bindings = make([]bindings.Binding, 0, n)
	for i := range n {
		pfx := st.Prefixes[i%prefixes]
		a := pfx.CIDR.Addr().As16()
		k := i / prefixes
		a[12], a[13], a[14], a[15] = byte(k>>24), byte(k>>16), byte(k>>8), byte(k)+1
		bd := bindings.NewBinding(netip.PrefixFrom(netip.AddrFrom16(a), 128), dispatch.Protocol(0), 0, bindings.CDN, bindings.FromAPI)
		bd.PrefixID = pfx.ID
		st.Bindings = append(st.Bindings, bd)
	}
	return store.Seed(path, st)
}

// chgProbeOwner dials the probed address until it sees want: "cdn" when a
// connection is accepted, "spectrum" when it is refused (spectrum serves no
// app on the port). It returns when it saw it.
func chgProbeOwner(want string, deadline time.Time) (time.Time, error) {
	addr := netip.AddrPortFrom(netip.MustParsePrefix(changeProbe).Addr(), changeHTTPPort)
	for time.Now().Before(deadline) {
		conn, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr))
		if err == nil {
			conn.Close()
			if want == "cdn" {
				return time.Now(), nil
			}
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			if want == "spectrum" {
				return time.Now(), nil
			}
			continue
		}
		return time.Time{}, err
	}
	return time.Time{}, fmt.Errorf("the probe never saw %s", want)
}

func runChangeLatency(c *harness.Ctx, r *harness.Result) error {
	r.Title = "change latency: PATCH round trip with 10k bindings (100k, 1M beside)"
	r.Unit = "change"
	r.Primary = "patch_ms_10k"
	r.Secondary = "dataplane_ms_10k"
	sizes := []int{10_000, 100_000, 1_000_000}
	if c.Mode.Tiny {
		sizes = sizes[:1]
	}
	moves := c.Mode.N(4, 2)
	r.Params["moves_per_round"] = moves
	r.Notes = append(r.Notes,
		"bindings loaded from the store file at start (API-made /128s in 1,000 /48s); one /32 of "+changePrefix+" moved cdn↔spectrum by PATCH, a /28 added by POST and deleted per round",
		"patch_ms_N, post_ms_N: median round trip (the answer means the data plane holds the change and the store is on disk); dataplane_ms_N: median time from sending the PATCH to the first new connection that sees the new owner (accepted by the cdn, or refused where spectrum serves no app)",
		"post_p99_ms_N, patch_p99_ms_N: the 99th percentiles of a burst of creates, each moved once and deleted after, per round",
		"start_s_N: edgeproxy's start until /readyz with N bindings")
	stopOrigin, err := chgStartOrigin()
	if err != nil {
		return err
	}
	defer stopOrigin()
	first := 1
	if c.Mode.Warmup() {
		first = 0
	}
	rounds := map[int]map[string]float64{}
	for _, n := range sizes {
		name := dispSizeNames[n]
		store := filepath.Join(c.Dir, "change-latency-"+name+".db")
		c.Log("%s: writing a store of %s bindings", r.Scenario, name)
		if err := chgStore(store, n); err != nil {
			return err
		}
		t0 := time.Now()
		ep, _, err := chgStartEdgeproxy(c, store, 150*time.Second)
		if err != nil {
			return err
		}
		startS := time.Since(t0).Seconds()
		r.Versions["edgeproxy"] = harness.Version(c.Edgeproxy)
		err = func() error {
			defer ep.Stop()
			probe, _, err := chgAddBinding(changeProbe, "cdn")
			if err != nil {
				return err
			}
			for round := first; round <= c.Mode.Rounds(); round++ {
				c.Log("%s: %s bindings, round %d/%d", r.Scenario, name, round, c.Mode.Rounds())
				var patch, plane, post []float64
				for i := range moves {
					for _, svc := range []string{"spectrum", "cdn"} {
						seen := make(chan time.Time, 1)
						errc := make(chan error, 1)
						sent := time.Now()
						nsSpawn(func() {
							t, err := chgProbeOwner(svc, time.Now().Add(30*time.Second))
							errc <- err
							seen <- t
						})
						took, err := chgMoveBinding(probe, svc)
						if err != nil {
							return err
						}
						if err := <-errc; err != nil {
							return err
						}
						patch = append(patch, float64(took.Microseconds())/1000)
						plane = append(plane, float64((<-seen).Sub(sent).Microseconds())/1000)
					}
					cidr := fmt.Sprintf("198.51.100.%d/28", 160+16*(i%4))
					b, took, err := chgAddBinding(cidr, "spectrum")
					if err != nil {
						return err
					}
					post = append(post, float64(took.Microseconds())/1000)
					if _, err := chgCallOK("DELETE", "/v1/prefixes/"+b.PrefixID+"/bindings/"+b.ID, "", nil); err != nil {
						return err
					}
				}
				// A burst of creates, moves and deletes, for the tail.
				var burst, moved []float64
				for i := range c.Mode.N(100, 10) {
					cidr := fmt.Sprintf("198.51.100.%d/32", 200+i%40)
					b, took, err := chgAddBinding(cidr, "spectrum")
					if err != nil {
						return err
					}
					burst = append(burst, float64(took.Microseconds())/1000)
					if took, err = chgMoveBinding(b, "cdn"); err != nil {
						return err
					}
					moved = append(moved, float64(took.Microseconds())/1000)
					if _, err := chgCallOK("DELETE", "/v1/prefixes/"+b.PrefixID+"/bindings/"+b.ID, "", nil); err != nil {
						return err
					}
				}
				if rounds[round] == nil {
					rounds[round] = map[string]float64{}
				}
				m := rounds[round]
				m["post_p99_ms_"+name] = harness.Percentile(burst, 0.99)
				m["patch_p99_ms_"+name] = harness.Percentile(moved, 0.99)
				m["patch_ms_"+name] = harness.Median(patch)
				m["dataplane_ms_"+name] = harness.Median(plane)
				m["post_ms_"+name] = harness.Median(post)
				m["start_s_"+name] = startS
				m["rss_mb_"+name] = ep.RSS() / 1024
			}
			return nil
		}()
		os.Remove(store)
		if err != nil {
			return fmt.Errorf("%s bindings: %w", name, err)
		}
	}
	for round := first; round <= c.Mode.Rounds(); round++ {
		r.Add("edgeproxy", round, rounds[round])
	}
	return nil
}

// changeBatchPrefix holds change-batch's bindings.
const changeBatchPrefix = "2001:db8:4600::/48"

// runChangeBatch onboards 100k bindings through one POST /v1/batch on an
// empty store, each round on a fresh one.
func runChangeBatch(c *harness.Ctx, r *harness.Result) error {
	n := 100_000
	if c.Mode.Tiny {
		n = 2_000
	}
	r.Title = fmt.Sprintf("onboarding: %d bindings in one POST /v1/batch", n)
	r.Unit = "batch"
	r.Primary = "batch_s"
	r.Params["bindings"] = n
	r.Notes = append(r.Notes, "batch_s: from sending the batch to its answer (the data plane holds all of them, the store is on disk); a fresh store each round")
	var body bytes.Buffer
	body.WriteString(`{"bindings":[`)
	base := netip.MustParsePrefix(changeBatchPrefix).Addr().As16()
	for i := range n {
		a := base
		a[12], a[13], a[14], a[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"cidr":"%s/128","service_id":"cdn"}`, netip.AddrFrom16(a))
	}
	body.WriteString("]}")
	first := 1
	if c.Mode.Warmup() {
		first = 0
	}
	for round := first; round <= c.Mode.Rounds(); round++ {
		store := filepath.Join(c.Dir, fmt.Sprintf("change-batch-%d.db", round))
		ep, _, err := chgStartEdgeproxy(c, store, 30*time.Second)
		if err != nil {
			return err
		}
		r.Versions["edgeproxy"] = harness.Version(c.Edgeproxy)
		err = func() error {
			defer ep.Stop()
			if _, err := chgCallOK("POST", "/v1/prefixes", `{"cidr":"`+changeBatchPrefix+`","service_id":"spectrum"}`, nil); err != nil {
				return err
			}
			took, err := chgCallOK("POST", "/v1/batch", body.String(), nil)
			if err != nil {
				return err
			}
			r.Add("edgeproxy", round, map[string]float64{"batch_s": took.Seconds(), "bindings_per_s": float64(n) / took.Seconds(), "rss_mb": ep.RSS() / 1024})
			return nil
		}()
		os.Remove(store)
		if err != nil {
			return err
		}
	}
	return nil
}
