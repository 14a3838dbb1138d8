package scenarios

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/dispatch/steered"
)

// The dispatch group: the sk_lookup program's own figures.
//
//   - dispatch-lookup: BPF run time per lookup (the kernel's BPF statistics)
//     with 1, 10k and 1M bindings, for repeated and spread probes, from the
//     dispatch package's BenchmarkLookup run pinned to the SUT CPU. Systems
//     "repeated" and "spread", metrics ns_1, ns_10k, ns_1M.
//   - dispatch-writes: whole-table writes (BenchmarkReplace): "insert" into
//     an empty generation, "replace" over one holding as many other
//     bindings; metrics s_N (seconds per table) and per_s_N (bindings/s).
//   - dispatch-connrate: new TCP connections per second, serial, to a
//     steered address (program attached, 1 / 10k / 1M bindings), to an
//     address the table does not hold with the program attached
//     ("unrelated"), and to a plain socket in a namespace without any
//     program ("detached"). Metrics rate_N (connections/s).

func init() {
	harness.Register(harness.Scenario{Name: "dispatch-lookup", Group: "dispatch", Run: runDispatchLookup})
	harness.Register(harness.Scenario{Name: "dispatch-writes", Group: "dispatch", Run: runDispatchWrites})
	harness.Register(harness.Scenario{Name: "dispatch-connrate", Group: "dispatch", Run: runDispatchConnRate})
}

// dispSizeNames are the binding counts by name.
var dispSizeNames = map[int]string{1: "1", 10_000: "10k", 100_000: "100k", 1_000_000: "1M"}

// nsSpawn runs fn on a goroutine whose sockets are created in the run's
// network namespace. The runner's whole process is in it; a test, whose
// namespace belongs to one thread, sets it to its netns.NS's Go.
var nsSpawn = func(fn func()) { go fn() }

var (
	dispatchTestMu  sync.Mutex
	dispatchTestBin string
)

// dispatchTest builds the dispatch package's test binary into the run's
// scratch directory (once while it is there) and returns its path and the
// package directory to run it in.
func dispatchTest(c *harness.Ctx) (bin, pkgDir string, err error) {
	root, err := dispModuleRoot()
	if err != nil {
		return "", "", err
	}
	dispatchTestMu.Lock()
	defer dispatchTestMu.Unlock()
	if _, err := os.Stat(dispatchTestBin); dispatchTestBin == "" || err != nil {
		out := filepath.Join(c.Dir, "dispatch.test")
		c.Log("building the dispatch test binary")
		cmd := exec.Command("go", "test", "-c", "-o", out, "./dispatch")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go test -c ./dispatch: %v\n%s", err, b)
		}
		dispatchTestBin = out
	}
	return dispatchTestBin, filepath.Join(root, "dispatch"), nil
}

// dispModuleRoot is the directory of the go.mod above the working directory.
func dispModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = up
	}
}

// dispBenchLine is one line of `go test -bench` output.
var dispBenchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// dispRunBench runs the dispatch test binary pinned to the SUT CPU with
// GOMAXPROCS=1 and returns, per benchmark name, its metrics by unit.
func dispRunBench(c *harness.Ctx, bench, benchtime string) (map[string]map[string]float64, error) {
	bin, dir, err := dispatchTest(c)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("taskset", "-c", strconv.Itoa(harness.SUTCPU), bin,
		"-test.run", "^$", "-test.bench", bench, "-test.benchtime", benchtime, "-test.count", "1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("dispatch.test -test.bench %s: %v\n%s", bench, err, out)
	}
	res := map[string]map[string]float64{}
	for _, l := range strings.Split(string(out), "\n") {
		m := dispBenchLine.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		vals := map[string]float64{}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				vals[f[i+1]] = v
			}
		}
		res[m[1]] = vals
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("dispatch.test -test.bench %s: no benchmark lines\n%s", bench, out)
	}
	return res, nil
}

// dispPerRound runs one measurement per round for all systems at once (a
// benchmark binary reports them together) and hands them out to Alternate.
func dispPerRound(run func(round int) (map[string]map[string]float64, error)) func(string, int) (map[string]float64, error) {
	cache := map[int]map[string]map[string]float64{}
	return func(sys string, round int) (map[string]float64, error) {
		if cache[round] == nil {
			m, err := run(round)
			if err != nil {
				return nil, err
			}
			cache[round] = m
		}
		m := cache[round][sys]
		if len(m) == 0 {
			return nil, fmt.Errorf("no figures for %s", sys)
		}
		return m, nil
	}
}

func runDispatchLookup(c *harness.Ctx, r *harness.Result) error {
	r.Title = "BPF run time per lookup (10k bindings; 1 and 1M beside)"
	r.Unit = "lookup"
	r.Primary = "ns_10k"
	r.Secondary = "ns_1M"
	sizes := "1|10k|1M"
	if c.Mode.Tiny {
		sizes = "1|10k"
	}
	n := c.Mode.N(200_000, 20_000)
	r.Params["probes_per_size"] = n
	r.Params["bindings"] = strings.Split(sizes, "|")
	r.Params["source"] = "dispatch.BenchmarkLookup (BPF_STATS_RUN_TIME), pinned to CPU 0, GOMAXPROCS=1"
	r.Notes = append(r.Notes, "repeated: one destination probed over and over (caches warm); spread: probes uniform over up to 65,536 bound /32s",
		"ns_N is the kernel's BPF run time per program run with N bindings, the full path: owner, port set, socket assignment")
	measure := dispPerRound(func(int) (map[string]map[string]float64, error) {
		res, err := dispRunBench(c, "^BenchmarkLookup$/^bindings=("+sizes+")$/", fmt.Sprintf("%dx", n))
		if err != nil {
			return nil, err
		}
		out := map[string]map[string]float64{"repeated": {}, "spread": {}}
		for name, vals := range res {
			var size, kind string
			if _, err := fmt.Sscanf(strings.ReplaceAll(strings.TrimPrefix(name, "BenchmarkLookup/bindings="), "/", " "), "%s %s", &size, &kind); err != nil {
				continue
			}
			if v, ok := vals["bpf-ns/lookup"]; ok && out[kind] != nil {
				out[kind]["ns_"+size] = v
				out[kind]["wall_ns_"+size] = vals["ns/op"]
			}
		}
		return out, nil
	})
	return harness.Alternate(c, r, []string{"repeated", "spread"}, measure)
}

func runDispatchWrites(c *harness.Ctx, r *harness.Result) error {
	r.Title = "whole-table write, bindings per second (100k bindings)"
	r.Unit = "binding"
	r.Primary = "per_s_100k"
	r.Secondary = "s_100k"
	sizes := []int{10_000, 100_000, 1_000_000}
	if c.Mode.Tiny {
		sizes = sizes[:2]
	}
	var names []string
	for _, n := range sizes {
		names = append(names, dispSizeNames[n])
	}
	r.Params["bindings"] = names
	r.Params["source"] = "dispatch.BenchmarkReplace, one write per size and round, pinned to CPU 0, GOMAXPROCS=1"
	r.Notes = append(r.Notes, "insert: a table of N /32 bindings written into an empty generation; replace: N bindings turned into N others (every entry deleted, another inserted), then switched to",
		"single-binding changes (amend) are measured end to end by change-latency (PATCH through the admin API)")
	measure := dispPerRound(func(round int) (map[string]map[string]float64, error) {
		// The warm-up round leaves 1M out: it is a third of a round's time
		// and warms nothing the smaller sizes do not.
		sz, nm := sizes, names
		if round == 0 && len(sizes) > 2 {
			sz, nm = sizes[:2], names[:2]
		}
		res, err := dispRunBench(c, "^BenchmarkReplace$/^bindings=("+strings.Join(nm, "|")+")$/", "1x")
		if err != nil {
			return nil, err
		}
		out := map[string]map[string]float64{"insert": {}, "replace": {}}
		for _, n := range sz {
			for sys, kind := range map[string]string{"insert": "first", "replace": "change"} {
				vals := res["BenchmarkReplace/bindings="+dispSizeNames[n]+"/"+kind]
				s, ok := vals["s/replace"]
				if !ok || s <= 0 {
					return nil, fmt.Errorf("no s/replace for %s at %s", kind, dispSizeNames[n])
				}
				out[sys]["s_"+dispSizeNames[n]] = s
				out[sys]["per_s_"+dispSizeNames[n]] = float64(n) / s
			}
		}
		return out, nil
	})
	return harness.Alternate(c, r, []string{"insert", "replace"}, measure)
}

// The connection-rate scenario's addresses and ports: steered bindings
// are /128s of connSteered, unrelated traffic goes to connUnrelated, which
// the table does not hold.
var (
	connSteered   = netip.MustParsePrefix("2001:db8:4400::/48")
	connUnrelated = netip.MustParsePrefix("2001:db8:4401::/48")
)

const (
	connPort      = 18401 // steered
	connPlainPort = 18402 // unrelated and detached
)

// dispConnTable is n /128 bindings of connSteered to one owner that serves
// connPort, and the addresses bound.
func dispConnTable(n int) (*dispatch.Table, []netip.Addr) {
	const owner dispatch.Owner = 1
	t := &dispatch.Table{Owners: map[dispatch.Owner]dispatch.Policy{
		owner: {Kind: dispatch.PolicyPorts, Ports: map[dispatch.ProtoPort]string{{Protocol: dispatch.TCP, Port: connPort}: "bench/tcp"}},
	}}
	rnd := rand.New(rand.NewPCG(11, uint64(n)))
	seen := make(map[uint64]bool, n)
	addrs := make([]netip.Addr, 0, n)
	t.Bindings = make([]dispatch.Binding, 0, n)
	base := connSteered.Addr().As16()
	for len(addrs) < n {
		v := rnd.Uint64()
		if seen[v] {
			continue
		}
		seen[v] = true
		a := base
		for i := range 8 {
			a[8+i] = byte(v >> (8 * i))
		}
		addrs = append(addrs, netip.AddrFrom16(a))
		t.Bindings = append(t.Bindings, dispatch.Binding{Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 128), Owner: owner})
	}
	return t, addrs
}

// dispAcceptClose accepts connections and closes each at once.
func dispAcceptClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// dispDialFor makes connections one after the other for about d (at least
// one chunk), each a full exchange (connect, the server's close, close),
// to addresses picked from addrs, and returns connections per second.
func dispDialFor(d time.Duration, addrs []netip.Addr, port uint16, rnd *rand.Rand) (float64, error) {
	const chunk = 50
	n := 0
	buf := make([]byte, 1)
	start := time.Now()
	for n == 0 || time.Since(start) < d {
		for range chunk {
			c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(netip.AddrPortFrom(addrs[rnd.IntN(len(addrs))], port)))
			if err != nil {
				return 0, err
			}
			c.Read(buf)
			c.Close()
		}
		n += chunk
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// dispPinThread locks the calling goroutine to its thread and pins the thread
// to cpu; undo restores both.
func dispPinThread(cpu int) (undo func()) {
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return func() {}
	}
	var set unix.CPUSet
	set.Set(cpu)
	unix.SchedSetaffinity(0, &set)
	return func() {
		unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	}
}

// dispPlainNetns runs a worker on a thread of its own in a fresh network
// namespace with lo up, 2001:db8::/32 routed to it and a plain listener on
// connPlainPort: no program is attached there. Each request is a duration;
// the worker answers the rate of dispDialFor. Close the channel to end it.
func dispPlainNetns(addrs []netip.Addr) (chan<- time.Duration, <-chan float64, error) {
	req, resp := make(chan time.Duration), make(chan float64)
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		var set unix.CPUSet
		set.Set(harness.SUTCPU)
		unix.SchedSetaffinity(0, &set)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("unshare: %w", err)
			return
		}
		for _, a := range [][]string{{"link", "set", "lo", "up"}, {"route", "add", "local", "2001:db8::/32", "dev", "lo"}} {
			if out, err := exec.Command("ip", a...).CombinedOutput(); err != nil {
				ready <- fmt.Errorf("ip %s: %v: %s", strings.Join(a, " "), err, out)
				return
			}
		}
		os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse", []byte("1"), 0o644)
		ln, err := net.Listen("tcp", fmt.Sprintf("[::]:%d", connPlainPort))
		if err != nil {
			ready <- err
			return
		}
		defer ln.Close()
		go dispAcceptClose(ln)
		ready <- nil
		rnd := rand.New(rand.NewPCG(5, 6))
		for d := range req {
			rate, err := dispDialFor(d, addrs, connPlainPort, rnd)
			if err != nil {
				rate = -1
			}
			resp <- rate
		}
	}()
	if err := <-ready; err != nil {
		return nil, nil, err
	}
	return req, resp, nil
}

// dispUnrelatedAddrs returns n random addresses of connUnrelated, outside
// every table the scenario writes.
func dispUnrelatedAddrs(rnd *rand.Rand, n int) []netip.Addr {
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		a := connUnrelated.Addr().As16()
		v := rnd.Uint64()
		for j := range 8 {
			a[8+j] = byte(v >> (8 * j))
		}
		addrs[i] = netip.AddrFrom16(a)
	}
	return addrs
}

// dispDetachedRate asks the plain namespace's dialer for d of connections
// and returns their rate.
func dispDetachedRate(d time.Duration, req chan<- time.Duration, resp <-chan float64) (float64, error) {
	req <- d
	if rate := <-resp; rate >= 0 {
		return rate, nil
	}
	return 0, errors.New("dial in the plain namespace failed")
}

func runDispatchConnRate(c *harness.Ctx, r *harness.Result) error {
	r.Title = "new TCP connections per second, steered (10k bindings) against a plain socket"
	r.Unit = "connection"
	r.Primary = "rate_10k"
	sizes := []int{1, 10_000, 1_000_000}
	if c.Mode.Tiny {
		sizes = sizes[:2]
	}
	d := c.Mode.D(time.Second)
	r.Params["bindings"] = len(sizes)
	r.Params["per_measure_s"] = d.Seconds()
	r.Notes = append(r.Notes,
		"one connection at a time (connect, server closes, client closes), client and server in the harness process; the dialing thread is pinned to CPU 0",
		"steered: destinations spread over the N bound /128s, sk_lookup assigns the registered listener; unrelated: destinations outside the table with the program attached (the kernel's lookup decides); detached: the same to a plain listener in a namespace without any program",
		"rate_N for unrelated and detached is measured while the table holds N bindings (detached: in the other namespace, so N does not apply)")

	undo := dispPinThread(harness.SUTCPU)
	defer undo()
	disp, err := dispatch.Open(dispatch.Options{BindingCapacity: sizes[len(sizes)-1]})
	if err != nil {
		return fmt.Errorf("open dispatcher: %w", err)
	}
	defer disp.Close()
	ln, err := steered.Listen("tcp", "[::]:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go dispAcceptClose(ln)
	if err := disp.Register("bench/tcp", ln); err != nil {
		return err
	}
	plain, err := net.Listen("tcp", fmt.Sprintf("[::]:%d", connPlainPort))
	if err != nil {
		return err
	}
	defer plain.Close()
	go dispAcceptClose(plain)

	rnd := rand.New(rand.NewPCG(1, 2))
	unrelated := dispUnrelatedAddrs(rnd, 4096)
	req, resp, err := dispPlainNetns(unrelated)
	if err != nil {
		return fmt.Errorf("plain namespace: %w", err)
	}
	defer close(req)

	systems := []string{"steered", "unrelated", "detached"}
	first := 1
	if c.Mode.Warmup() {
		first = 0
	}
	rounds := map[string]map[int]map[string]float64{}
	for _, s := range systems {
		rounds[s] = map[int]map[string]float64{}
	}
	attached := false
	for _, n := range sizes {
		name := dispSizeNames[n]
		table, addrs := dispConnTable(n)
		c.Log("%s: writing %s bindings", r.Scenario, name)
		if err := disp.Replace(table); err != nil {
			return fmt.Errorf("replace %s: %w", name, err)
		}
		if !attached {
			if err := disp.Attach(); err != nil {
				return fmt.Errorf("attach: %w", err)
			}
			attached = true
		}
		for round := first; round <= c.Mode.Rounds(); round++ {
			for _, sys := range systems {
				c.Log("%s: %s, %s bindings, round %d/%d", r.Scenario, sys, name, round, c.Mode.Rounds())
				var rate float64
				switch sys {
				case "steered":
					rate, err = dispDialFor(d, addrs, connPort, rnd)
				case "unrelated":
					rate, err = dispDialFor(d, unrelated, connPlainPort, rnd)
				case "detached":
					rate, err = dispDetachedRate(d, req, resp)
				}
				if err != nil {
					return fmt.Errorf("%s, %s bindings, round %d: %w", sys, name, round, err)
				}
				if rounds[sys][round] == nil {
					rounds[sys][round] = map[string]float64{}
				}
				rounds[sys][round]["rate_"+name] = rate
			}
		}
	}
	counters, err := disp.Counters()
	if err != nil {
		return err
	}
	if counters["bench/tcp"].Lookups == 0 {
		return errors.New("no steered lookups counted: the program did not steer")
	}
	for round := first; round <= c.Mode.Rounds(); round++ {
		for _, sys := range systems {
			r.Add(sys, round, rounds[sys][round])
		}
	}
	return nil
}
