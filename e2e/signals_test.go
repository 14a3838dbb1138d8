package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// signalsConfig is a cdn site whose origin is silentOrigin's and a spectrum
// TCP echo app, with a grace far longer than any test waits.
const signalsConfig = `shutdown_grace: 30s
store: {path: ""}
prefixes:
  - {cidr: 192.0.2.0/24, service: cdn}
  - {cidr: 198.51.100.0/24, service: spectrum}
cdn:
  http_ports: [80]
  https_ports: []
  http3: false
  access_log: "off"
  timeouts: {upstream: 60s}
  sites: [{hosts: [a.example], origins: ["http://127.0.0.1:18601"]}]
spectrum:
  apps:
    - {name: echo, protocol: tcp, edge: 198.51.100.0/24, ports: "7", origins: ["127.0.0.1:18607"]}
`

// silentOrigin accepts connections at addr and reads them, never answering;
// each request head it reads is announced on the channel.
func silentOrigin(t *testing.T, addr string) <-chan struct{} {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	heads := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go func() {
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if l == "\r\n" {
						heads <- struct{}{}
					}
				}
			}()
		}
	}()
	return heads
}

// logLines returns the instance's JSON log lines whose msg is msg.
func (in *instance) logLines(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(in.stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// waitLog waits up to d for a log line with msg for which ok holds.
func (in *instance) waitLog(d time.Duration, msg string, ok func(map[string]any) bool) map[string]any {
	in.t.Helper()
	var found map[string]any
	if err := testutil.WaitFor(d, func() error {
		for _, rec := range in.logLines(msg) {
			if ok(rec) {
				found = rec
				return nil
			}
		}
		return errors.New("not yet")
	}); err != nil {
		in.t.Fatalf("no %q log line as wanted within %v", msg, d)
	}
	return found
}

// logOnFailure logs the instance's log if the test fails.
func (in *instance) logOnFailure() {
	in.t.Cleanup(func() {
		if in.t.Failed() {
			in.t.Logf("edgeproxy's log:\n%s", in.stderr)
		}
	})
}

// waitExit waits up to d for the instance to exit and returns its exit
// code and how long it took.
func (in *instance) waitExit(d time.Duration) (int, time.Duration) {
	in.t.Helper()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- in.cmd.Wait() }()
	select {
	case err := <-errc:
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, time.Since(start)
		case errors.As(err, &ee):
			return ee.ExitCode(), time.Since(start)
		default:
			in.t.Fatal(err)
		}
	case <-time.After(d):
		in.cmd.Process.Kill()
		<-errc // one Wait only: in.stop sees it exited
		in.t.Fatalf("still running %v later", d)
	}
	return -1, 0
}

// TestSignalSecondCutsDrain: SIGTERM with a request held at an origin that
// never answers and a spectrum connection open starts a drain of 30 s, whose
// log line a second counts them; a second SIGTERM closes them at once and
// the process exits 0 within 2 s, saying the drain was cut.
func TestSignalSecondCutsDrain(t *testing.T) {
	ns := netns.New(t)
	heads := silentOrigin(t, "127.0.0.1:18601")
	echo.Start(t, "echo", "127.0.0.1:18607")
	in := startInstance(t, ns, signalsConfig)
	in.logOnFailure()

	held, err := net.Dial("tcp", "192.0.2.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := io.WriteString(held, "GET /held HTTP/1.1\r\nHost: a.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-heads:
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the origin")
	}
	sp, err := net.Dial("tcp", "198.51.100.1:7")
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	sp.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, err := bufio.NewReader(sp).ReadString('\n'); err != nil || !strings.HasPrefix(l, "echo") {
		t.Fatalf("spectrum echo: %q %v", l, err)
	}

	if err := in.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopping := in.waitLog(5*time.Second, "stopping", func(map[string]any) bool { return true })
	if stopping["signal"] != "terminated" || stopping["grace_s"] != 30.0 {
		t.Errorf("the stopping line: %v, want signal terminated and grace 30s", stopping)
	}
	// Both stay open through the drain: its line counts them.
	rec := in.waitLog(3*time.Second, "draining", func(map[string]any) bool { return true })
	if cdn, _ := rec["cdn"].(float64); cdn < 1 {
		t.Errorf("draining: cdn=%v, want at least the held request's connection: %v", rec["cdn"], rec)
	}
	if n, _ := rec["spectrum_tcp"].(float64); n != 1 {
		t.Errorf("draining: spectrum_tcp=%v, want 1: %v", rec["spectrum_tcp"], rec)
	}
	if n, ok := rec["spectrum_udp"].(float64); !ok || n != 0 {
		t.Errorf("draining: spectrum_udp=%v, want 0: %v", rec["spectrum_udp"], rec)
	}
	if left, _ := rec["left_s"].(float64); left <= 0 || left >= 30 {
		t.Errorf("draining: left_s=%v, want what remains of the 30 s grace", rec["left_s"])
	}
	// A line about every second, not one only.
	in.waitLog(3*time.Second, "draining", func(r map[string]any) bool { return r["left_s"] != rec["left_s"] })

	if err := in.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, took := in.waitExit(2 * time.Second)
	t.Logf("exited %v after the second SIGTERM", took.Round(time.Millisecond))
	if code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	cut := in.logLines("drain cut by a second signal: closing the connections left")
	if len(cut) != 1 || cut[0]["signal"] != "terminated" {
		t.Errorf("the cut line: %v", cut)
	}
	if stopped := in.logLines("stopped"); len(stopped) != 1 || stopped[0]["cut"] != true {
		t.Errorf("the stopped line: %v", stopped)
	}
	// The held connections ended.
	for name, c := range map[string]net.Conn{"cdn": held, "spectrum": sp} {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s connection after the cut: %v, want its end", name, err)
		}
	}
}

// TestSignalStopsAtOnceWhenIdle: one SIGTERM or SIGINT with nothing open
// stops within a fraction of the 30 s grace, exit 0, without a cut.
func TestSignalStopsAtOnceWhenIdle(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			ns := netns.New(t)
			silentOrigin(t, "127.0.0.1:18601")
			echo.Start(t, "echo", "127.0.0.1:18607")
			in := startInstance(t, ns, signalsConfig)
			in.logOnFailure()
			if err := in.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			code, took := in.waitExit(2 * time.Second)
			t.Logf("exited %v after %v", took.Round(time.Millisecond), sig)
			if code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
			stopping := in.logLines("stopping")
			if len(stopping) != 1 || stopping[0]["signal"] != sig.String() || stopping[0]["cdn"] != 0.0 || stopping[0]["spectrum_tcp"] != 0.0 {
				t.Errorf("the stopping line: %v, want signal %q and nothing open", stopping, sig)
			}
			if stopped := in.logLines("stopped"); len(stopped) != 1 || stopped[0]["cut"] != false {
				t.Errorf("the stopped line: %v", stopped)
			}
			if n := len(in.logLines("draining")); n != 0 {
				t.Errorf("%d draining lines for a stop with nothing open", n)
			}
		})
	}
}

// TestDemoStopsWithinShortGrace: the embedded demo's grace is 3 s, so
// Ctrl-C with a spectrum connection open ends in about that, not in 30 s.
func TestDemoStopsWithinShortGrace(t *testing.T) {
	ns := netns.New(t)
	in := &instance{t: t, admin: "http://127.0.0.1:9180", stderr: new(testutil.Buffer)}
	in.cmd = exec.Command(binary, "run")
	in.cmd.Stderr = in.stderr
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.stop)
	in.logOnFailure()
	var c net.Conn
	if err := testutil.WaitFor(10*time.Second, func() (err error) {
		c, err = ns.DialContext(context.Background(), "tcp", "127.1.2.3:7")
		return err
	}); err != nil {
		t.Fatalf("the demo's spectrum echo: %v", err)
	}
	defer c.Close()
	// The demo echo greets, then answers each line: the connection is
	// through to it.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "demo echo origin") {
		t.Fatalf("the demo's spectrum echo: %q %v", l, err)
	}
	if _, err := io.WriteString(c, "hi\n"); err != nil {
		t.Fatal(err)
	}
	if l, err := br.ReadString('\n'); err != nil || l != "hi\n" {
		t.Fatalf("the demo's spectrum echo: %q %v", l, err)
	}

	if err := in.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	code, took := in.waitExit(6 * time.Second)
	t.Logf("exited %v after SIGINT with a spectrum connection open", took.Round(time.Millisecond))
	if code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	if took < 2500*time.Millisecond {
		t.Errorf("exited after %v: the open connection was not given the grace", took)
	}
	if s := in.logLines("stopping"); len(s) != 1 || s[0]["grace_s"] != 3.0 || s[0]["spectrum_tcp"] != 1.0 {
		t.Errorf("the stopping line: %v, want grace 3s and the spectrum connection", s)
	}
}

// startRun runs `edgeproxy run --config cfg` (cfg "": the embedded demo)
// in the test's namespace and waits until /readyz on admin answers 200.
func startRun(t *testing.T, ns *netns.NS, cfg, admin string) *instance {
	t.Helper()
	in := &instance{t: t, admin: "http://" + admin, stderr: new(testutil.Buffer), config: cfg}
	args := []string{"run"}
	if cfg != "" {
		args = append(args, "--config", cfg)
	}
	in.cmd = exec.Command(binary, args...)
	in.cmd.Stderr = in.stderr
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.stop)
	in.logOnFailure()
	hc := ns.HTTPClient()
	defer hc.CloseIdleConnections()
	if err := testutil.WaitFor(10*time.Second, func() error { return testutil.Answers(hc, in.admin+"/readyz", 200) }); err != nil {
		t.Fatalf("edgeproxy did not become ready: %v", err)
	}
	return in
}

// TestSignalCutLeavesPinnedStateAsAStop: a drain cut by a second SIGTERM
// leaves the pinned state as a normal stop does: the bound prefix stays
// closed to the host's own service on its port (fail closed), the pin
// dir's lock is released, and the next run on the pin dir takes it over
// and serves.
func TestSignalCutLeavesPinnedStateAsAStop(t *testing.T) {
	ns := netns.New(t)
	echo.Start(t, "origin", "127.0.0.1:7007")
	serveHost(t, 7) // what the prefix would reach if it were let go
	pin := filepath.Join(netns.BPFFS(t), "edgeproxy")
	cfg := testutil.WriteConfig(t, fmt.Sprintf(`shutdown_grace: 30s
admin: {listen: 127.0.0.1:9180}
dispatch: {pin_dir: %q}
store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
spectrum:
  apps: [{name: echo, protocol: tcp, edge: 192.0.2.0/24, ports: "7", origins: ["127.0.0.1:7007"]}]
`, pin))
	in := startRun(t, ns, cfg, "127.0.0.1:9180")
	if got := askName(t, "tcp", "192.0.2.1:7"); got != "origin" {
		t.Fatalf("before: %q, want the origin", got)
	}
	held, err := net.Dial("tcp", "192.0.2.1:7")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, err := bufio.NewReader(held).ReadString('\n'); err != nil || !strings.HasPrefix(l, "origin") {
		t.Fatalf("held connection: %q %v", l, err)
	}

	in.cmd.Process.Signal(syscall.SIGTERM)
	in.waitLog(3*time.Second, "draining", func(r map[string]any) bool { return r["spectrum_tcp"] == 1.0 })
	in.cmd.Process.Signal(syscall.SIGTERM)
	if code, took := in.waitExit(2 * time.Second); code != 0 {
		t.Fatalf("exit status %d after %v, want 0", code, took)
	}
	if len(in.logLines("drain cut by a second signal: closing the connections left")) != 1 {
		t.Error("no line says the drain was cut")
	}
	got := askName(t, "tcp", "192.0.2.1:7")
	t.Logf("after the cut: 192.0.2.1:7 %s", got)
	if got == "host" || got == "origin" {
		t.Errorf("after the cut: 192.0.2.1:7 answered by %q, want it closed as a stop leaves it", got)
	}
	next := startRun(t, ns, cfg, "127.0.0.1:9180")
	if got := askName(t, "tcp", "192.0.2.1:7"); got != "origin" {
		t.Errorf("the next run on the pin dir: %q, want the origin", got)
	}
	next.cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := next.waitExit(2 * time.Second); code != 0 {
		t.Errorf("the next run: exit status %d, want 0", code)
	}
}
