package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
	"github.com/edgeproxy/edgeproxy/server"
)

// builds are the binaries the upgrade tests move between, built once:
// "next" is the same code of another version, "nextlayout" a build whose
// BPF object has one map more and the next schema version.
var builds struct {
	once sync.Once
	next string
	lay  string
	err  error
}

func otherBuilds(t *testing.T) (next, nextLayout string) {
	t.Helper()
	builds.once.Do(func() {
		dir := filepath.Dir(binary)
		builds.next = filepath.Join(dir, "edgeproxy-next")
		builds.lay = filepath.Join(dir, "edgeproxy-nextlayout")
		for _, b := range []struct{ out, version, tags string }{
			{builds.next, "next", ""},
			{builds.lay, "nextlayout", "edgeproxy_nextlayout"},
		} {
			args := []string{"build", "-ldflags", "-X main.version=" + b.version, "-o", b.out}
			if b.tags != "" {
				args = append(args, "-tags", b.tags)
			}
			if out, err := exec.Command("go", append(args, "../cmd/edgeproxy")...).CombinedOutput(); err != nil {
				builds.err = fmt.Errorf("go build %s: %v\n%s", b.version, err, out)
				return
			}
		}
	})
	if builds.err != nil {
		t.Fatal(builds.err)
	}
	return builds.next, builds.lay
}

// upgradable is an edgeproxy run from a binary of its own (which the test
// replaces, as a package upgrade does), with pinned state, whose processes
// all write to one log.
type upgradable struct {
	*instance
	exe  string
	pin  string
	hc   func() *admin.Status
	pids map[int]bool // every process seen serving, killed at the end
}

// startUpgradable runs body (with admin on 127.0.0.1:9180, a pin dir and a
// store of its own added) from a copy of the test binary. Its stderr is a
// pipe every process of it inherits: the old one's exit does not end it.
func startUpgradable(t *testing.T, ns *netns.NS, body string, env ...string) *upgradable {
	t.Helper()
	return startUpgradableFrom(t, ns, binary, body, env...)
}

// startUpgradableFrom is startUpgradable from a copy of the binary src.
func startUpgradableFrom(t *testing.T, ns *netns.NS, src, body string, env ...string) *upgradable {
	t.Helper()
	dir := t.TempDir()
	u := &upgradable{exe: filepath.Join(dir, "edgeproxy"), pin: filepath.Join(netns.BPFFS(t), "edgeproxy"), pids: map[int]bool{}}
	install(t, src, u.exe)
	cfg := testutil.WriteConfig(t, fmt.Sprintf("admin: {listen: 127.0.0.1:9180}\ndispatch: {pin_dir: %q}\nstore: {path: %q}\n", u.pin, filepath.Join(dir, "store.json"))+body)
	in := &instance{t: t, admin: "http://127.0.0.1:9180", stderr: new(testutil.Buffer), config: cfg}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(in.stderr, r)
	in.cmd = exec.Command(u.exe, "run", "--config", cfg)
	in.cmd.Stderr = w
	in.cmd.Env = append(os.Environ(), env...)
	err = in.cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	u.instance = in
	u.pids[in.cmd.Process.Pid] = true
	t.Cleanup(func() {
		in.stop()
		for pid := range u.pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	in.logOnFailure()
	u.hc = func() *admin.Status { return status(t, ns, in.admin) }
	if err := testutil.WaitFor(10*time.Second, func() error {
		if u.hc() == nil {
			return errors.New("no status")
		}
		return nil
	}); err != nil {
		t.Fatal("edgeproxy did not come up")
	}
	return u
}

// status returns GET /v1/status, nil when nothing answers.
func status(t *testing.T, ns *netns.NS, adminURL string) *admin.Status {
	hc := ns.HTTPClient()
	defer hc.CloseIdleConnections()
	var st admin.Status
	if err := (&admin.Client{Base: adminURL, HTTP: hc}).Do("GET", "/v1/status", nil, &st); err != nil {
		return nil
	}
	return &st
}

// install copies src to dst the way a package manager replaces a binary:
// a new file renamed over the old one.
func install(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// upgrade sends SIGUSR2 to the serving process and waits until another
// process serves, in state serving, and returns it and how long it took.
func (u *upgradable) upgrade(t *testing.T) (*admin.Status, time.Duration) {
	t.Helper()
	before := u.hc()
	if before == nil {
		t.Fatal("nothing serves before the upgrade")
	}
	start := time.Now()
	syscall.Kill(before.PID, syscall.SIGUSR2)
	for time.Since(start) < 15*time.Second {
		if st := u.hc(); st != nil && st.PID != before.PID && st.State == "serving" {
			u.pids[st.PID] = true
			return st, time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no new process serves 15 s after SIGUSR2 to %d", before.PID)
	return nil, 0
}

// failedUpgrade sends SIGUSR2 and waits for the serving process to say the
// upgrade failed; it returns the log line.
func (u *upgradable) failedUpgrade(t *testing.T, during func(child int)) map[string]any {
	t.Helper()
	before := u.hc()
	n := len(u.logLines("upgrade failed: this process serves on"))
	syscall.Kill(before.PID, syscall.SIGUSR2)
	if during != nil {
		started := u.waitLog(5*time.Second, "upgrade: the new process started", func(r map[string]any) bool {
			return !u.pids[int(r["child"].(float64))]
		})
		child := int(started["child"].(float64))
		u.pids[child] = true
		during(child)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if l := u.logLines("upgrade failed: this process serves on"); len(l) > n {
			return l[n]
		}
		if time.Now().After(deadline) {
			t.Fatal("no failed upgrade within 15 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// askLoop asks the spectrum echo app at dst over a new TCP connection
// again and again until stop closes, and counts the answers and failures.
func askLoop(ns *netns.NS, dst string, stop <-chan struct{}) (ok, failed *atomic.Int64, errs chan string) {
	ok, failed, errs = new(atomic.Int64), new(atomic.Int64), make(chan string, 8)
	ns.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := echo.Ask("tcp", netip.MustParseAddrPort(dst), 3*time.Second)
			if err == nil && got == "origin" {
				ok.Add(1)
			} else {
				failed.Add(1)
				select {
				case errs <- fmt.Sprintf("%s %q %v", time.Now().Format("15:04:05.000"), got, err):
				default:
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	return ok, failed, errs
}

const killBody = `shutdown_grace: 2s
prefixes: [{cidr: 198.51.100.0/24, service: spectrum}]
spectrum:
  apps: [{name: echo, protocol: tcp, edge: 198.51.100.0/24, ports: "7", origins: ["127.0.0.1:7007"]}]
`

// TestUpgradeChildKilledWithWriterRole: a child killed once it has the
// writer role (its sockets made, its maps filled, its program not yet
// swapped in) leaves the node with the parent, which never misses a
// connection, takes binding changes again, and whose next upgrade works.
func TestUpgradeChildKilledWithWriterRole(t *testing.T) {
	f := newMixFixture(t, "shutdown_grace: 2s\n")
	body := strings.Replace(f.body, "store: {path: \"\"}\n", "", 1)
	u := startUpgradable(t, f.ns, body, "EDGEPROXY_UPGRADE_PAUSE=writer")
	parent := u.hc()
	mix := startLoadMix(t, f.ns, f.mixAll("192.0.2.10"))
	time.Sleep(300 * time.Millisecond)
	var writes int
	line := u.failedUpgrade(t, func(child int) {
		u.waitLog(5*time.Second, "upgrade: the new process has the writer role; binding changes are held", func(map[string]any) bool { return true })
		// Held: a change answers 503, saying why.
		out, errOut, code := u.cli("bindings", "add", "192.0.2.128/25", "cdn")
		if code != 1 || !strings.Contains(errOut, "upgrade is in progress") {
			t.Errorf("a change while the child has the writer role: %d %q %q, want 503 naming the upgrade", code, out, errOut)
		}
		writes++
		syscall.Kill(child, syscall.SIGKILL)
	})
	time.Sleep(300 * time.Millisecond)
	r := mix.stop()
	t.Logf("killed with the writer role: %s; the mix:%v", line["error"], r)
	requireClean(t, "a child killed with the writer role", r, 5)
	if got := u.hc(); got.PID != parent.PID || got.State != "serving" || got.Upgrades.Failed != 1 {
		t.Errorf("after the failed upgrade: %+v", got)
	}
	if _, errOut, code := u.cli("bindings", "add", "192.0.2.128/25", "cdn"); code != 0 {
		t.Errorf("a change after the take-back: %d %s", code, errOut)
	}
}

// TestUpgradeChildNotReady: a child whose program is swapped in but which
// does not say it is ready within the bound is killed; the parent swaps
// its own program back in and serves on. Connections the child accepted
// in between go with it; the log says how long the node was the child's.
func TestUpgradeChildNotReady(t *testing.T) {
	ns := netns.New(t)
	echo.Start(t, "origin", "127.0.0.1:7007")
	u := startUpgradable(t, ns, killBody, "EDGEPROXY_UPGRADE_PAUSE=ready")
	parent := u.hc()
	line := u.failedUpgrade(t, nil)
	if e, _ := line["error"].(string); !strings.Contains(e, "not ready within 10s") {
		t.Errorf("the log says %q", e)
	}
	// The parent's program again: it serves new connections at once.
	stop := make(chan struct{})
	ok, failed, errs := askLoop(ns, "198.51.100.1:7", stop)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	if failed.Load() > 0 || ok.Load() < 20 {
		t.Errorf("after the take-back: %d answered, %d failed (%s)", ok.Load(), failed.Load(), firstOf(errs))
	}
	if got := u.hc(); got.PID != parent.PID || got.State != "serving" {
		t.Errorf("after the failed upgrade: %+v", got)
	}
}

// running reports whether pid is a process that has not exited (an
// orphan's zombie, waiting for init to reap it, has).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func firstOf(errs chan string) string {
	select {
	case e := <-errs:
		return e
	default:
		return ""
	}
}

// TestUpgradeStatusAndFailures: SIGUSR2 hands the node to a new process of
// the binary now on disk (another version), which GET /v1/status names;
// the old one exits 0. Then, under the whole load mix, children that fail
// (a file that does not validate, one that changes dispatch.pin_dir, a
// binary that exits at once) leave the node with the process that serves,
// which misses nothing, and whose log and status say why.
func TestUpgradeStatusAndFailures(t *testing.T) {
	next, _ := otherBuilds(t)
	f := newMixFixture(t, "node: edge-u\nshutdown_grace: 2s\n")
	body := strings.Replace(f.body, "store: {path: \"\"}\n", "", 1)
	u := startUpgradable(t, f.ns, body)
	first := u.hc()
	if first.State != "serving" || first.Upgrades.Generation != 0 || first.Version == "next" {
		t.Fatalf("first status: %+v", first)
	}

	install(t, next, u.exe)
	st, took := u.upgrade(t)
	t.Logf("SIGUSR2 to the new process serving: %v", took)
	if st.Version != "next" || st.Upgrades.Generation != 1 || st.Node != "edge-u" {
		t.Errorf("after the upgrade: %+v, want version next, generation 1", st)
	}
	if code, took := u.waitExit(5 * time.Second); code != 0 {
		t.Errorf("the old process exited %d after %v, want 0", code, took)
	} else {
		t.Logf("the old process exited %v after the new one served", took)
	}

	time.Sleep(500 * time.Millisecond) // the old process's admin listener is gone
	mix := startLoadMix(t, f.ns, f.mixAll("192.0.2.10"))
	time.Sleep(300 * time.Millisecond)
	// A configuration that does not validate.
	cfg, _ := os.ReadFile(u.config)
	os.WriteFile(u.config, append(cfg, []byte("bogus_key: 1\n")...), 0o600)
	line := u.failedUpgrade(t, nil)
	if e, _ := line["error"].(string); !strings.Contains(e, "bogus_key") {
		t.Errorf("bad config: the log says %q, want the key named", e)
	}
	// A configuration that changes the pin dir.
	os.WriteFile(u.config, []byte(strings.Replace(string(cfg), u.pin, u.pin+"-other", 1)), 0o600)
	line = u.failedUpgrade(t, nil)
	if e, _ := line["error"].(string); !strings.Contains(e, "dispatch.pin_dir") {
		t.Errorf("pin dir change: the log says %q, want dispatch.pin_dir named", e)
	}
	os.WriteFile(u.config, cfg, 0o600)
	// A binary that exits at once.
	os.WriteFile(u.exe+".new", []byte("#!/bin/sh\nexit 3\n"), 0o755)
	os.Rename(u.exe+".new", u.exe)
	line = u.failedUpgrade(t, nil)
	if e, _ := line["error"].(string); !strings.Contains(e, "exit status 3") {
		t.Errorf("a binary that exits: the log says %q", e)
	}
	time.Sleep(300 * time.Millisecond)
	r := mix.stop()
	t.Logf("the mix through three failed upgrades:%v", r)
	requireClean(t, "three failed upgrades", r, 5)
	got := u.hc()
	if got.PID != st.PID || got.State != "serving" || got.Upgrades.Failed != 3 || got.Upgrades.OK != 0 {
		t.Errorf("after three failed upgrades: %+v, want the same process serving, 3 failed", got)
	}
	if !strings.Contains(got.Upgrades.LastError, "exit status 3") {
		t.Errorf("last_error %q", got.Upgrades.LastError)
	}
}

// upgradeUnderLoad upgrades u to each of bins (binary and the version it
// reports) in turn under mix, as an operator does: the binary replaced,
// SIGUSR2, the old process gone once its grace ended. gen is the upgrade
// generation u serves at before.
func upgradeUnderLoad(t *testing.T, u *upgradable, mix *loadMix, grace time.Duration, gen int, bins ...[2]string) {
	t.Helper()
	never := time.Now().Add(time.Hour)
	mix.setDeadline(never)
	time.Sleep(time.Second)
	for i, b := range bins {
		old := u.hc()
		install(t, b[0], u.exe)
		st, took := u.upgrade(t)
		// The old process serves what it holds for the accept drain and
		// its grace, then closes the long-lived connections.
		mix.setDeadline(time.Now().Add(server.AcceptDrain + grace - 200*time.Millisecond))
		if st.Version != b[1] || st.Upgrades.Generation != gen+i+1 {
			t.Errorf("upgrade %d: %+v, want version %s, generation %d", gen+i+1, st, b[1], gen+i+1)
		}
		start := time.Now()
		if old.PID == u.cmd.Process.Pid { // the test's child: its status can be read
			if code, _ := u.waitExit(server.AcceptDrain + grace + 5*time.Second); code != 0 {
				t.Errorf("upgrade %d: the old process exited %d, want 0", gen+i+1, code)
			}
		}
		for running(old.PID) {
			if time.Since(start) > server.AcceptDrain+grace+5*time.Second {
				t.Fatalf("upgrade %d: the old process %d still runs", gen+i+1, old.PID)
			}
			time.Sleep(20 * time.Millisecond)
		}
		exited := time.Since(start)
		t.Logf("upgrade %d to %s: SIGUSR2 to the new process serving %v; the old one gone %v later", gen+i+1, b[1], took.Round(time.Millisecond), exited.Round(time.Millisecond))
		time.Sleep(500 * time.Millisecond) // the long-lived streams reconnect to the new process
		mix.setDeadline(never)
		time.Sleep(time.Second)
	}
}

// requireUpgradesClean fails t unless the mix r went through n upgrades
// with nothing failed, reset or refused before an old process's grace
// ended; the long-lived connections told to go, or kept until then.
func requireUpgradesClean(t *testing.T, r mixReport, n int) {
	t.Helper()
	for _, s := range r {
		// A long-lived connection the old process closes at its grace's
		// end may close with a reset (an echo was on its way in): that
		// is counted as ended, as a reset before the end is failed.
		resets := s.Resets
		if s.Name == "websocket" || s.Name == "spectrum-tcp" {
			resets = max(0, s.Resets-s.Ended)
		}
		// A keep-alive request that crossed the old process's close of
		// the idle connection may see the close as a reset, before any
		// of a response: it is sent again on a new connection (retried),
		// as a connection that ends between requests.
		if s.Name == "h1-keepalive" {
			resets = max(0, s.Resets-s.Retried)
		}
		if s.failures() > 0 || resets > 0 || s.Refused > 0 || s.OK < 20 {
			t.Errorf("%v: want nothing failed, reset or refused before the old process's grace ended", s)
		}
	}
	// Told to go: a GOAWAY, or (a request that crossed the GOAWAY) the
	// request rejected, which the client sends again on a new connection.
	for _, name := range []string{"h2", "h3"} {
		if s, _ := r.get(name); s.Reconnected+s.Retried < n || s.Reconnected == 0 {
			t.Errorf("%v: want the connection told to go at each upgrade", s)
		}
	}
	for _, name := range []string{"websocket", "spectrum-tcp"} {
		if s, _ := r.get(name); s.Ended < n {
			t.Errorf("%v: want it kept until each old process's grace ended, then ended", s)
		}
	}
}

// TestUpgradeUnderLoad: three SIGUSR2 upgrades under the whole load mix —
// to a new version, then across a change of the BPF layout (a build with
// one map more and the next schema version), then back to the first
// build. Every time: nothing fails, nothing is reset; keep-alive
// connections end between requests, HTTP/2 and HTTP/3 are told to go and
// reconnect to the new process; the WebSocket and the spectrum connection
// and flow keep echoing on the old process until its grace ends; the old
// process exits 0.
func TestUpgradeUnderLoad(t *testing.T) {
	next, nextLayout := otherBuilds(t)
	const grace = 3 * time.Second
	f := newMixFixture(t, "shutdown_grace: 3s\n")
	body := strings.Replace(f.body, "store: {path: \"\"}\n", "", 1)
	u := startUpgradable(t, f.ns, body)
	mix := startLoadMix(t, f.ns, f.mixAll("192.0.2.10"))
	upgradeUnderLoad(t, u, mix, grace, 0, [2]string{next, "next"}, [2]string{nextLayout, "nextlayout"}, [2]string{binary, "dev"})
	r := mix.stop()
	t.Logf("the mix through three upgrades:%v", r)
	requireUpgradesClean(t, r, 3)
	if st := u.hc(); st.Version != "dev" || st.Upgrades.Generation != 3 {
		t.Errorf("at the end: %+v", st)
	}
	if des, err := os.ReadDir(u.pin); err == nil {
		for _, de := range des {
			if de.Name() == "lookups" {
				t.Errorf("the next layout's map is still pinned after the upgrade back")
			}
		}
	}
}
