package scenarios

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// The in-process load generator (bench/load) runs on the harness's own
// threads: these pin them to the load CPU while it runs, and make its
// connections in the namespace the scenario started in, whatever thread
// dials (a test's namespace belongs to one thread only).

// pinSelf moves every thread of this process to cpu (threads made later
// inherit it) and returns what puts them back on every CPU.
func pinSelf(cpu int) (restore func(), err error) {
	var one, all unix.CPUSet
	one.Set(cpu)
	for i := range runtime.NumCPU() {
		all.Set(i)
	}
	set := func(s *unix.CPUSet) error {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			tid, _ := strconv.Atoi(t.Name())
			if err := unix.SchedSetaffinity(tid, s); err != nil && err != unix.ESRCH {
				return fmt.Errorf("sched_setaffinity %d: %w", tid, err)
			}
		}
		return nil
	}
	if err := set(&one); err != nil {
		set(&all)
		return nil, err
	}
	return func() { set(&all) }, nil
}

// nsDialer dials in the network namespace of the thread that made it.
type nsDialer struct{ fd int }

// newNSDialer opens the calling thread's namespace; call it on the
// scenario's goroutine.
func newNSDialer() (*nsDialer, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &nsDialer{fd: fd}, nil
}

func (d *nsDialer) close() { unix.Close(d.fd) }

// DialContext dials from a fresh thread that has entered the namespace.
func (d *nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.Dial(ctx, &net.Dialer{}, network, addr)
}

// Dial dials with dl from a fresh thread that has entered the namespace
// (load.UDPOptions.Dial).
func (d *nsDialer) Dial(ctx context.Context, dl *net.Dialer, network, addr string) (c net.Conn, err error) {
	err = d.do(func() error { c, err = dl.DialContext(ctx, network, addr); return err })
	return c, err
}

// ListenPacket listens from a fresh thread that has entered the namespace
// (load.HTTPOptions.ListenPacket).
func (d *nsDialer) ListenPacket(ctx context.Context, network, addr string) (c net.PacketConn, err error) {
	err = d.do(func() error { c, err = new(net.ListenConfig).ListenPacket(ctx, network, addr); return err })
	return c, err
}

// do runs fn on a fresh thread that has entered the namespace; the thread
// ends with its goroutine.
func (d *nsDialer) do(fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread must not serve others
		if err := unix.Setns(d.fd, unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("setns: %w", err)
			return
		}
		ch <- fn()
	}()
	return <-ch
}
