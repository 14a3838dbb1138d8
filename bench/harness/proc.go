package harness

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// The CPUs: the system under test runs alone on SUTCPU; load generators
// and origins share LoadCPU.
const (
	SUTCPU  = 0
	LoadCPU = 1
)

// Proc is a program the harness runs: a system under test, an origin or a
// load generator, pinned to one CPU, in a process group of its own (nginx's
// workers would outlive a killed master).
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Out  *testutil.Buffer // its stdout and stderr
}

// Start runs argv pinned to cpu (taskset), with GOMAXPROCS=1 for Go
// programs, and env added to the harness's environment.
func Start(name string, cpu int, env []string, argv ...string) (*Proc, error) {
	args := append([]string{"-c", strconv.Itoa(cpu)}, argv...)
	cmd := exec.Command("taskset", args...)
	cmd.Env = append(append(os.Environ(), "GOMAXPROCS=1"), env...)
	p := &Proc{Name: name, Cmd: cmd, Out: new(testutil.Buffer)}
	cmd.Stdout, cmd.Stderr = p.Out, p.Out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// Pid is the process's id (taskset execs the program in place).
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Stop kills the process group and waits.
func (p *Proc) Stop() {
	if p == nil || p.Cmd.Process == nil {
		return
	}
	p.Kill()
	p.Cmd.Wait()
}

// Kill kills the process group without waiting: for a caller that already
// waits for the process (Cmd.Wait must not run twice at once).
func (p *Proc) Kill() { syscall.Kill(-p.Pid(), syscall.SIGKILL) }

// Signal sends sig to the process (not its group).
func (p *Proc) Signal(sig syscall.Signal) error { return syscall.Kill(p.Pid(), sig) }

// CPU returns the CPU time (user and system) of the process and all its
// live descendants: nginx's and haproxy's workers, a Go program's threads.
func (p *Proc) CPU() time.Duration { return TreeCPU(p.Pid()) }

// RSS returns the resident memory of the process and its live
// descendants, in KB.
func (p *Proc) RSS() float64 {
	var kb float64
	for _, pid := range tree(p.Pid()) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				f, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
				kb += f
			}
		}
	}
	return kb
}

var clkTck = 100.0 // USER_HZ on Linux

// TreeCPU is the CPU time of pid and its live descendants.
func TreeCPU(pid int) time.Duration {
	var ticks float64
	for _, p := range tree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// The command may hold spaces and parentheses: fields start after
		// the last ')'. utime and stime are fields 14 and 15.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		ticks += u + st
	}
	return time.Duration(ticks / clkTck * float64(time.Second))
}

// tree is pid and its live descendants.
func tree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], t.Name()))
			if err != nil {
				continue
			}
			for _, c := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(c); err == nil {
					out = append(out, n)
				}
			}
		}
	}
	return out
}

// Exited reports whether the process has ended (a zombie nobody waited
// for yet counts).
func (p *Proc) Exited() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) == 0 || f[0] == "Z"
}

// Tail is the last 2000 bytes of what the process printed, for errors.
func (p *Proc) Tail() string { return Tail(p.Out.String()) }

// Tail is the last 2000 bytes of s.
func Tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

// WaitTCP waits until addr accepts a connection, dialled on the calling
// goroutine (in a test, the one in the test's namespace), for up to 10 s
// or until the process exits.
func (p *Proc) WaitTCP(addr string) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !p.Exited(); {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: nothing listens on %s:\n%s", p.Name, addr, p.Tail())
}

// WaitReady waits until edgeproxy's /readyz on admin answers 200, for up
// to 15 s or until the process exits. The request is written by hand on a
// connection of the calling goroutine (net/http would dial on another
// thread, outside a test's namespace).
func (p *Proc) WaitReady(admin string) error {
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !p.Exited(); {
		if c, err := net.DialTimeout("tcp", admin, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprintf(c, "GET /readyz HTTP/1.0\r\nHost: %s\r\n\r\n", admin)
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.Contains(line, " 200 ") {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: /readyz on %s never answered 200:\n%s", p.Name, admin, p.Tail())
}

// CPUTimes are one CPU's counters from /proc/stat, in clock ticks.
type CPUTimes struct {
	CPU                  int
	Busy, Softirq, Total float64
}

// ReadCPU returns cpu's counters now: busy is every state but idle and
// iowait (softirq included: the kernel's network work, which no process is
// charged for).
func ReadCPU(cpu int) (CPUTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUTimes{}, err
	}
	prefix := "cpu" + strconv.Itoa(cpu) + " "
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		t := CPUTimes{CPU: cpu}
		for i, f := range strings.Fields(l)[1:] {
			v, _ := strconv.ParseFloat(f, 64)
			if i >= 8 { // guest and guest_nice are counted in user already
				break
			}
			t.Total += v
			switch i {
			case 3, 4: // idle, iowait
			case 6:
				t.Softirq += v
				t.Busy += v
			default:
				t.Busy += v
			}
		}
		return t, nil
	}
	return CPUTimes{}, fmt.Errorf("/proc/stat: no %q line", strings.TrimSpace(prefix))
}

// Since returns the busy share (0..1), the busy seconds and the softirq
// seconds of t's CPU since t was read.
func (t CPUTimes) Since() (share, busy, softirq float64) {
	now, err := ReadCPU(t.CPU)
	if err != nil || now.Total <= t.Total {
		return 0, 0, 0
	}
	return (now.Busy - t.Busy) / (now.Total - t.Total), (now.Busy - t.Busy) / clkTck, (now.Softirq - t.Softirq) / clkTck
}
