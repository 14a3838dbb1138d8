package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// onCPU returns a command pinned to cpu, with GOMAXPROCS=1 for Go programs.
func onCPU(cpu int, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("taskset", append([]string{"-c", strconv.Itoa(cpu), name}, args...)...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	return cmd
}

// started starts cmd and stops it when the benchmark ends.
func started(b *testing.B, cmd *exec.Cmd) *exec.Cmd {
	b.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A process group of its own: nginx's workers outlive a killed master
	// and would hold the output pipes open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatalf("%s: %v", cmd.Args, err)
	}
	b.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if b.Failed() {
			b.Logf("%s:\n%s", cmd.Args, out.String())
		}
	})
	return cmd
}

func waitTCP(b *testing.B, addr string) {
	b.Helper()
	if err := testutil.WaitFor(10*time.Second, func() error { return testutil.Accepts(addr) }); err != nil {
		b.Fatalf("nothing listens on %s: %v", addr, err)
	}
}

// nginx starts an nginx with the given http{} body on cpu, master and one
// worker, and returns the master's pid.
func nginx(b *testing.B, cpu int, httpBody string) int {
	b.Helper()
	bin := testutil.NeedTool(b, "nginx", "nginx")
	dir := b.TempDir()
	os.MkdirAll(filepath.Join(dir, "logs"), 0o755)
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`worker_processes 1;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 4096; }
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
`, dir, httpBody)), 0o644)
	cmd := started(b, onCPU(cpu, bin, "-p", dir, "-c", conf))
	return cmd.Process.Pid
}

// cpuTicks returns the user and system clock ticks of pid and its children
// processes (nginx's workers).
func cpuTicks(pid int) int64 {
	pids := []int{pid}
	if kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
		for _, f := range strings.Fields(string(kids)) {
			if k, err := strconv.Atoi(f); err == nil {
				pids = append(pids, k)
			}
		}
	}
	var total int64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		u, _ := strconv.ParseInt(fields[11], 10, 64)
		st, _ := strconv.ParseInt(fields[12], 10, 64)
		total += u + st
	}
	return total
}

// clockTick is USER_HZ.
const clockTick = 100

var wrkRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
var wrkTotal = regexp.MustCompile(`([0-9]+) requests in`)

// wrk runs wrk on cpu against url and returns requests per second and the
// number of requests.
func wrk(b *testing.B, cpu int, url string, conns int, d time.Duration, extra ...string) (float64, int64) {
	b.Helper()
	bin := testutil.NeedTool(b, "wrk", "wrk")
	args := append([]string{"-t1", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(d.Seconds()))}, extra...)
	out, err := onCPU(cpu, bin, append(args, url)...).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	m := wrkRate.FindSubmatch(out)
	n := wrkTotal.FindSubmatch(out)
	if m == nil || n == nil {
		b.Fatalf("wrk output:\n%s", out)
	}
	if bytes.Contains(out, []byte("Non-2xx")) || bytes.Contains(out, []byte("Socket errors")) {
		b.Fatalf("wrk saw errors:\n%s", out)
	}
	rate, _ := strconv.ParseFloat(string(m[1]), 64)
	total, _ := strconv.ParseInt(string(n[1]), 10, 64)
	return rate, total
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
