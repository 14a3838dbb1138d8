// Package sockns creates sockets in one network namespace, whatever thread
// asks. A namespace belongs to a thread, and sockets are born in the
// namespace of the thread that creates them. In production edgeproxy runs
// every thread in one namespace and sockets are made directly. In tests a
// single thread is moved into a namespace of its own; services started there
// create their later sockets (origin dials, per-flow sockets) on other
// threads, which this package moves into the right namespace first.
package sockns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Here is a place where sockets are created: the network namespace of the
// thread that called Here.
type Here struct {
	fd     int // the namespace, when it is not the process's own
	direct bool
}

// Capture returns the namespace of the calling thread. When every thread of
// the process is in it, sockets will be created directly (threads the
// runtime starts later inherit it).
func Capture() (*Here, error) {
	var thread unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &thread); err != nil {
		return nil, fmt.Errorf("sockns: %w", err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("sockns: %w", err)
	}
	direct := true
	for _, task := range tasks {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/task/"+task.Name()+"/ns/net", &st); err == nil && (st.Ino != thread.Ino || st.Dev != thread.Dev) {
			direct = false
			break
		}
	}
	if direct {
		return &Here{fd: -1, direct: true}, nil
	}
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sockns: %w", err)
	}
	return &Here{fd: fd}, nil
}

// Do runs fn so that the sockets it creates live in h's namespace: directly
// when the whole process is there, else on a fresh thread moved there (which
// ends with fn).
func (h *Here) Do(fn func()) {
	if h.direct {
		fn()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// Never unlocked: the thread ends with this goroutine.
		if err := unix.Setns(h.fd, unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("sockns: setns: %v", err))
		}
		fn()
	}()
	<-done
}

// Direct reports whether sockets are created directly.
func (h *Here) Direct() bool { return h.direct }
