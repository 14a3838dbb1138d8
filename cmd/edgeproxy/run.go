package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/sdnotify"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
	"github.com/edgeproxy/edgeproxy/server"
)

//go:embed demo.yaml
var demoConfig []byte

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlags("run", stderr)
	path := fs.String("config", "", "configuration `file` (empty: the embedded demo)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("run: unexpected argument %q", fs.Arg(0))
	}
	child, err := childOfUpgrade()
	if err != nil {
		return err
	}
	if child != nil {
		defer func() {
			if err != nil {
				child.fail(err)
			}
		}()
	}
	if err := checkPrivileges(); err != nil {
		return err
	}
	return serve(ctx, *path, child, stdout, stderr)
}

// runCapabilities are the capabilities run needs: CAP_BPF to load the
// dispatcher's program and maps, CAP_NET_ADMIN to attach it to the
// network namespace.
var runCapabilities = []struct {
	bit  uint
	name string
}{{unix.CAP_BPF, "CAP_BPF"}, {unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}}

// checkPrivileges says plainly that run needs root, or the capabilities
// it uses, before the kernel refuses in its own words.
func checkPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil // the kernel will say what it lacks
	}
	has := func(bit uint) bool { return data[bit/32].Effective&(1<<(bit%32)) != 0 }
	var missing []string
	for _, c := range runCapabilities {
		// Before CAP_BPF (Linux 5.8) CAP_SYS_ADMIN granted what it does.
		if !has(c.bit) && !(c.bit == unix.CAP_BPF && has(unix.CAP_SYS_ADMIN)) {
			missing = append(missing, c.name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("run needs root, or the capabilities CAP_BPF and CAP_NET_ADMIN (it loads a BPF program and attaches it to the network namespace): this process (uid %d) lacks %s", os.Geteuid(), strings.Join(missing, " and "))
}

// serve runs the server on the file at path (empty: the embedded demo),
// as a live upgrade's new process when child is set.
func serve(ctx context.Context, path string, child *upgradeChild, stdout, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	demo := path == ""
	cfg, cleanup, err := loadPlan(path)
	if err != nil {
		return err
	}
	defer cleanup()
	if child != nil {
		if err := server.CheckRestartOnly(child.restartOnly, cfg); err != nil {
			return fmt.Errorf("upgrade: %w", err)
		}
	}
	if cfg.Dispatch.Netns != "" {
		if err := enterNetns(cfg.Dispatch.Netns); err != nil {
			return err
		}
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	if cfg.Node != "" {
		log = log.With("node", cfg.Node)
	}

	opts := server.Options{Config: cfg, Logger: log, Version: version}
	if child != nil {
		opts.Handover = child.handover()
		log = log.With("generation", child.generation)
		opts.Logger = log
	}
	if demo {
		origins, err := startDemoOrigins(ctx)
		if err != nil {
			return err
		}
		defer origins.Close()
	}
	s, err := server.Start(opts)
	if err != nil {
		return err
	}
	if child != nil {
		if err := child.ready(); err != nil {
			s.Close()
			return fmt.Errorf("upgrade: %w", err)
		}
		s.Confirmed()
		log.Info("upgrade: this process serves the node", "pid", os.Getpid())
	}
	if demo {
		fmt.Fprint(stdout, demoBanner(exe, s.AdminAddr().String()))
	}
	notify(log, sdnotify.Ready("serving"))
	handedOver := serveSignals(ctx, s, cfg, path, exe, log)
	stop(ctx, s, cfg, handedOver, log)
	return nil
}

// loadPlan reads the configuration at path, or with no path the embedded
// demo's, whose certificate it makes in a temporary directory that
// cleanup removes.
func loadPlan(path string) (cfg *config.Plan, cleanup func(), err error) {
	if path != "" {
		cfg, err = config.Load(path)
		return cfg, func() {}, err
	}
	dir, err := os.MkdirTemp("", "edgeproxy-demo")
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	certFile, keyFile, err := selfsigned.Write(dir, "demo", "demo.edgeproxy.test", "*.edgeproxy.test", "127.1.1.7")
	if err == nil {
		yaml := strings.NewReplacer("{{cert}}", certFile, "{{key}}", keyFile).Replace(string(demoConfig))
		cfg, err = config.Parse([]byte(yaml))
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return cfg, cleanup, nil
}

// demoMoved is the binding the demo's banner adds and moves back.
var demoMoved = netip.MustParsePrefix("127.1.1.128/25")

// demoBanner is what the demo prints at start: its version, the admin
// API's address, and commands to try, each of which works pasted as it
// is, from any directory: this binary by its absolute path, the id of
// the binding they add by a prefix of it. A command that is meant to
// fail says "refused".
func demoBanner(exe, adminAddr string) string {
	cli := exe
	if adminAddr != strings.TrimPrefix(defaultAdmin, "http://") {
		cli += " --admin http://" + adminAddr
	}
	id := bindings.BindingID(demoMoved, 0, 0)[:8]
	try := [][2]string{
		{"curl http://127.1.1.7:8080/", "any address of 127.1.1.0/24 answers, through the cdn to the demo origin"},
		{"curl -k https://127.1.1.7:8443/api/hello", "HTTPS; /api/ goes to another origin"},
		{"curl -k --http2 -I https://127.1.1.7:8443/", "HTTP/2, with Alt-Svc announcing HTTP/3"},
		{exe + " get --http3 -k https://127.1.1.7:8443/", "HTTP/3 (quic-go's client; -k: the certificate is self-signed)"},
		{"curl http://127.1.1.7:8081/", "refused: the cdn does not serve that port"},
		{"curl http://" + adminAddr + "/v1/origins", "the cdn's origins: health, connections, reuse"},
		{exe + " dial 127.1.2.3:7", "spectrum TCP echo"},
		{exe + " dial --udp 127.1.2.3:7", "spectrum UDP echo; the answer comes from 127.1.2.3:7"},
		{exe + " dial 127.1.2.3:1005", "the origin (port 17105) reads spectrum's PROXY v1 header"},
		{cli + " prefixes list", "the two prefixes, their services and bindings"},
		{cli + " bindings add " + demoMoved.String() + " spectrum", "half of the cdn's prefix to spectrum (id " + id + "…)"},
		{"curl http://127.1.1.200:8080/", "refused now: spectrum has no app on tcp/8080"},
		{cli + " lookup 127.1.1.200:8080/tcp", "says why"},
		{cli + " bindings move " + id + " cdn", "back to the cdn, by a prefix of the binding's id"},
		{"curl http://127.1.1.200:8080/", "answers again"},
		{cli + " bindings list", "every binding, with its prefix's id"},
	}
	width := 0
	for _, t := range try {
		width = max(width, len(t[0]))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "edgeproxy %s demo\n", version)
	b.WriteString("  cdn:      127.1.1.0/24: HTTP on tcp/8080, HTTPS and HTTP/2 on tcp/8443, HTTP/3 on udp/8443 (self-signed certificate)\n")
	b.WriteString("  spectrum: 127.1.2.0/24, apps echo-tcp (tcp/7), echo-udp (udp/7), whoami-proxy-v1 (tcp/1000-1999, PROXY v1)\n")
	fmt.Fprintf(&b, "  admin API on http://%s\n", adminAddr)
	b.WriteString("try, in another terminal (each line pastes as it is):\n")
	for _, t := range try {
		fmt.Fprintf(&b, "  %-*s  # %s\n", width, t[0], t[1])
	}
	b.WriteString("stop with Ctrl-C (open connections get 3 s, a second Ctrl-C stops at once); the program detaches (the demo is unpinned) and the machine is as it was\n")
	return b.String()
}

// serveSignals serves until ctx ends or an upgrade hands the node over,
// which it reports: SIGHUP reloads path, SIGUSR2 starts an upgrade.
func serveSignals(ctx context.Context, s *server.Server, cfg *config.Plan, path, exe string, log *slog.Logger) (handedOver bool) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	var upgrading chan upgradeResult // non-nil while an upgrade runs
	for ctx.Err() == nil && !handedOver {
		select {
		case <-ctx.Done():
		case <-hup:
			notify(log, sdnotify.Reloading())
			reload(s, path, log)
			notify(log, sdnotify.Ready("serving"))
		case <-usr2:
			switch {
			case path == "":
				log.Warn("upgrade refused: the embedded demo has no file for a new process to read (run with --config)")
			case upgrading != nil:
				log.Warn("upgrade refused: one is under way")
			default:
				upgrading = make(chan upgradeResult, 1)
				go func() { upgrading <- upgrade(s, cfg, exe, log) }()
			}
		case res := <-upgrading:
			upgrading = nil
			handedOver = res.err == nil
		}
	}
	if upgrading != nil {
		// Stopped during an upgrade: it ends (ready, or taken back) first.
		handedOver = (<-upgrading).err == nil
	}
	return handedOver
}

// stop drains the server within the shutdown grace, after the log line
// that says why and what it held.
func stop(ctx context.Context, s *server.Server, cfg *config.Plan, handedOver bool, log *slog.Logger) {
	if handedOver {
		// The new process serves: this one takes what its listeners
		// still hold, then drains. The unit's main pid is the child's
		// now, so systemd hears nothing more from this one.
		time.Sleep(server.AcceptDrain)
	} else {
		notify(log, sdnotify.Stopping("draining"))
	}
	grace := time.Duration(cfg.ShutdownGrace)
	attrs := []any{"grace_s", grace.Seconds()}
	if sig, ok := context.Cause(ctx).(stopSignal); ok {
		attrs = append(attrs, "signal", sig.sig.String())
	} else if handedOver {
		attrs = append(attrs, "upgraded", true)
	}
	if v, err := s.Dispatcher().Verdicts(); err == nil {
		attrs = append(attrs, "steered", v.Steer, "refused", v.Refuse, "failed", v.Fail, "kernel", v.NoMatch+v.Pass)
	}
	log.Info("stopping", append(attrs, openConnections(s)...)...)
	drain(s, grace, againSignals(ctx), log)
}

// notify logs a failure to tell systemd of a state change (the service
// runs on regardless).
func notify(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("systemd notification", "error", err)
	}
}

// drain runs the server's Shutdown within grace. While the services wait
// for their connections, a "draining" line a second says how many are
// left; a signal on again (a second SIGINT or SIGTERM) cuts the wait: the
// connections left are closed at once, and Shutdown's other steps (the
// access log, the dispatcher, the pin dir's lock) run as they always do.
func drain(s *server.Server, grace time.Duration, again <-chan os.Signal, log *slog.Logger) {
	start := time.Now()
	deadline := start.Add(grace)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	cut := false
	var hard <-chan time.Time // after a cut: the bound on Shutdown's last steps
	for {
		select {
		case err := <-done:
			if err != nil && !cut {
				log.Warn("shutdown", "error", err)
			}
			log.Info("stopped", "after_s", time.Since(start).Round(time.Millisecond).Seconds(), "cut", cut)
			return
		case <-tick.C:
			left := max(time.Until(deadline), 0).Round(time.Second)
			log.Info("draining", append(openConnections(s), "left_s", left.Seconds())...)
		case sig := <-again:
			cut, again = true, nil
			log.Warn("drain cut by a second signal: closing the connections left", append([]any{"signal", sig.String()}, openConnections(s)...)...)
			cancel()
			hard = time.After(cutBound)
		case <-hard:
			// What is left ends with the process: its descriptors (sockets,
			// the pin dir's lock) close, pinned state stays pinned.
			log.Warn("stopped: the shutdown did not end within its bound after the cut", "bound_s", cutBound.Seconds(), "after_s", time.Since(start).Round(time.Millisecond).Seconds())
			return
		}
	}
}

// cutBound is how long a shutdown whose drain a second signal cut may take
// to finish its other steps before the process exits regardless.
const cutBound = time.Second

// openConnections returns, as log attributes, the client connections each
// service holds: the cdn's (TCP and QUIC), spectrum's TCP connections and
// UDP flows. A service the server does not run is left out.
func openConnections(s *server.Server) []any {
	var attrs []any
	if s.CDN != nil {
		attrs = append(attrs, "cdn", s.CDN.OpenConnections())
	}
	if s.Spectrum != nil {
		attrs = append(attrs, "spectrum_tcp", s.Spectrum.OpenConnections(), "spectrum_udp", s.Spectrum.Flows())
	}
	return attrs
}

// reload reads the configuration file again and applies it (SIGHUP). A
// file that does not load or apply changes nothing; the log says why.
func reload(s *server.Server, path string, log *slog.Logger) {
	if path == "" {
		log.Warn("reload: the embedded demo has no file to read again")
		return
	}
	if err := s.ReloadFile(path); err != nil {
		log.Error("reload refused; the running configuration stays", "config", path, "error", err)
		return
	}
	log.Info("reloaded", "config", path)
}

// netnsEnv marks a process that re-executed itself inside dispatch.netns.
const netnsEnv = "EDGEPROXY_NETNS"

// openNetns opens the namespace of dispatch.netns, as run enters it and
// check reads it.
func openNetns(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("dispatch.netns: %s: %w", path, err)
	}
	return fd, nil
}

// enterNetns moves the whole process into the network namespace at path
// before any socket exists: a thread enters it, and the process re-executes
// itself from that thread, so that every thread of the new image starts
// there (setns moves one thread only).
func enterNetns(path string) error {
	if os.Getenv(netnsEnv) == path {
		return nil // already re-executed inside it
	}
	fd, err := openNetns(path)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("dispatch.netns: enter %s: %w", path, err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	env := append(os.Environ(), netnsEnv+"="+path)
	return fmt.Errorf("dispatch.netns: re-execute inside %s: %w", path, syscall.Exec(exe, os.Args, env))
}
