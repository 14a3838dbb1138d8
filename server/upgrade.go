package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
)

// A live upgrade (SIGUSR2) starts the new binary as a child of the running
// process. Both sides live here; the binary runs the conversation between
// them (cmd/edgeproxy). The phases:
//
//  1. prepare: the child starts with Options.Handover: configuration,
//     certificates, its own sockets, its own dispatcher objects. Nothing
//     shared is written.
//  2. writer role: the child's Start calls Handover.WriterRole; the
//     parent's GiveWriterRole holds every binding change (503).
//  3. take over: the child reads the store, fills its maps, registers its
//     sockets in them and swaps its program into the link (Attach): the
//     one step at which new connections go to the child. Its changes stay
//     held until the parent confirms (Confirmed).
//  4. drain: the parent's HandedOver closes its admin listener; it drains
//     as at a stop. Or, when the child failed after phase 2, TakeBack
//     swaps the parent's program back in and lets changes through again.

// AcceptDrain is how long the old process of a live upgrade keeps
// accepting after the switch: connections whose handshake began before it
// complete there.
const AcceptDrain = time.Second

// Handover is what the new process of a live upgrade is handed.
type Handover struct {
	// Lock is the pin dir's lock descriptor (nil unpinned): the child
	// holds the lock without a moment in which a third process could
	// take it.
	Lock *os.File
	// Link is the running link's descriptor: the child swaps its program
	// into it.
	Link *os.File
	// WriterRole asks the running process for the writer role and
	// returns once it gave it up (it holds its binding changes).
	WriterRole func() error
	// RestartOnly are the running process's values of the keys an
	// upgrade may not change (RestartOnly).
	RestartOnly map[string]string
	// Generation counts the upgrades that led to this process.
	Generation int
}

// restartOnly lists the keys a live upgrade may not change: they need a
// stop and a start (another pin dir or namespace is another data plane,
// another store or node another identity).
var upgradeFixed = []string{"dispatch.pin_dir", "dispatch.netns", "store.path", "node"}

// RestartOnly returns cfg's values of the keys a live upgrade may not
// change, by key.
func RestartOnly(cfg *config.Plan) map[string]string {
	return map[string]string{
		"dispatch.pin_dir": cfg.PinDir(),
		"dispatch.netns":   cfg.Dispatch.Netns,
		"store.path":       cfg.Store.Path,
		"node":             cfg.Node,
	}
}

// CheckRestartOnly refuses a configuration that changes one of the keys a
// live upgrade may not change, naming it.
func CheckRestartOnly(running map[string]string, cfg *config.Plan) error {
	mine := RestartOnly(cfg)
	var errs []error
	for _, k := range upgradeFixed {
		if running[k] != mine[k] {
			errs = append(errs, fmt.Errorf("%s: %q differs from the running process's %q: an upgrade cannot change it (stop, then start)", k, mine[k], running[k]))
		}
	}
	return errors.Join(errs...)
}

func (s *Server) checkHandover(h *Handover) error {
	if h == nil {
		return nil
	}
	if err := CheckRestartOnly(h.RestartOnly, s.cfg); err != nil {
		return err
	}
	if h.Link == nil {
		return errors.New("upgrade: the running process handed down no link")
	}
	if s.cfg.PinDir() != "" && h.Lock == nil {
		return errors.New("upgrade: the running process handed down no lock of dispatch.pin_dir")
	}
	s.generation = h.Generation
	return nil
}

// bindAdmin binds the admin API's socket, with SO_REUSEPORT, without
// listening: during a live upgrade both processes hold admin.listen, and
// the new one listens (listenAdmin) only once it serves the node, so that
// no admin connection waits on a process that may yet be taken back. The
// old one closes its listener as it hands over.
func bindAdmin(addr string) (*os.File, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(nil)
	if ip4 := ta.IP.To4(); ip4 != nil || ta.IP == nil {
		family = unix.AF_INET
		a := &unix.SockaddrInet4{Port: ta.Port}
		copy(a.Addr[:], ip4)
		sa = a
	} else {
		a := &unix.SockaddrInet6{Port: ta.Port}
		copy(a.Addr[:], ta.IP.To16())
		sa = a
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "admin")
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		f.Close()
		return nil, fmt.Errorf("bind %s: %w", addr, err)
	}
	return f, nil
}

// listenAdmin makes the bound socket listen and returns it as a listener.
func listenAdmin(f *os.File) (net.Listener, error) {
	defer f.Close()
	if err := unix.Listen(int(f.Fd()), 1024); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return net.FileListener(f)
}

// The upgrade's states, for GET /v1/status.
const (
	stateServing     = "serving"
	stateHandingOver = "handing_over"
	stateDraining    = "draining"
)

// HandOn returns new descriptors of what the child needs: the pin dir's
// lock (nil unpinned) and the link. The caller closes them once the child
// has them.
func (s *Server) HandOn() (lock, link *os.File, err error) {
	if link, err = s.disp.LinkFile(); err != nil {
		return nil, nil, err
	}
	if s.lock != nil {
		fd, err := unix.FcntlInt(s.lock.File().Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			link.Close()
			return nil, nil, fmt.Errorf("duplicate the pin dir's lock: %w", err)
		}
		lock = os.NewFile(uintptr(fd), "edgeproxy-lock")
	}
	return lock, link, nil
}

// BeginUpgrade marks the process as handing over (GET /v1/status). It
// returns false when an upgrade is already under way or the process is
// draining.
func (s *Server) BeginUpgrade() bool {
	s.upgradeMu.Lock()
	defer s.upgradeMu.Unlock()
	if s.state != stateServing {
		return false
	}
	s.state = stateHandingOver
	return true
}

// GiveWriterRole holds every binding change (the API answers 503, a SIGHUP
// is refused) and returns once none is in progress, and closes the store
// (the database's file lock goes with it): the child may open it.
func (s *Server) GiveWriterRole() error {
	s.Bindings.Hold("an upgrade is in progress: a new process is taking the writer role")
	if s.store == nil {
		return nil
	}
	if err := s.store.Close(); err != nil {
		return fmt.Errorf("close the %s for the new process: %w", s.store, err)
	}
	return nil
}

// UpgradeFailed ends an upgrade whose child failed: when it had the writer
// role, the data plane is ours again (our program in the link, our maps in
// the pins: the child may have swapped its in) and changes go through
// again. why is counted and kept for GET /v1/status.
func (s *Server) UpgradeFailed(why error, hadWriterRole bool) error {
	var err error
	if hadWriterRole {
		err = s.disp.Reclaim()
		if err == nil && s.store != nil {
			// The store is ours again: the child has closed it, or died.
			var st bindings.Store
			if st, err = openStore(s.cfg, s.log); err == nil {
				s.store = st
				s.Bindings.SetStore(st)
			}
		}
		if err == nil {
			s.Bindings.Release()
		}
	}
	s.upgradesTotal.WithLabelValues("failed").Inc()
	s.upgradeMu.Lock()
	s.lastUpgradeError = why.Error()
	if err == nil {
		s.state = stateServing
	}
	s.upgradeMu.Unlock()
	if err != nil {
		return fmt.Errorf("take the data plane back: %w", err)
	}
	return nil
}

// HandedOver ends an upgrade whose child is ready: counted, and the admin
// listener closes (the child's serves admin.listen alone); the caller then
// drains as at a stop.
func (s *Server) HandedOver() {
	s.upgradesTotal.WithLabelValues("ok").Inc()
	s.upgradeMu.Lock()
	s.state, s.handedOver = stateDraining, true
	s.upgradeMu.Unlock()
	s.adminLn.Close()
}

// upgrading refuses a reload while an upgrade hands over or the process
// drains: the new process reads the file itself.
func (s *Server) upgrading() error {
	s.upgradeMu.Lock()
	defer s.upgradeMu.Unlock()
	if s.state != stateServing {
		return fmt.Errorf("the process is %s: send SIGHUP to the process that serves (GET /v1/status names it)", s.state)
	}
	return nil
}

// Generation counts the upgrades that led to this process.
func (s *Server) Generation() int { return s.generation }

// Confirmed lets the child's binding changes through once the old process
// confirmed the handover (it can no longer take the data plane back).
func (s *Server) Confirmed() { s.Bindings.Release() }

func (s *Server) upgradeMetrics() {
	s.upgradesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgeproxy_upgrades_total",
		Help: "Live upgrades (SIGUSR2) this process started, by result: ok (the new process serves, this one drains), failed (this one serves on).",
	}, []string{"result"})
	for _, r := range []string{"ok", "failed"} {
		s.upgradesTotal.WithLabelValues(r)
	}
	s.Registry.MustRegister(s.upgradesTotal)
}

// counterValue reads one label value of a counter vector.
func counterValue(v *prometheus.CounterVec, label string) int {
	var m dto.Metric
	if err := v.WithLabelValues(label).Write(&m); err != nil {
		return 0
	}
	return int(m.GetCounter().GetValue())
}
