// Package server wires edgeproxy together: the dispatcher, the binding state
// from the configuration and the store, the admin API, and the sockets of
// the services. The binary runs it; tests start it in process and hand it
// named sockets for the service labels.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/net/netutil"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/fleet"
	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/spectrum"
	"github.com/edgeproxy/edgeproxy/store"
)

// Options configure a Server.
type Options struct {
	Config *config.Plan
	// Sockets are registered with the dispatcher under their labels
	// (bindings.Labels), in place of the services' own sockets: a service
	// whose labels all appear here does not start. A label that appears
	// with a nil socket stays without one, and a label without a socket
	// drops its traffic: fail closed.
	Sockets map[string]syscall.Conn
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Version is the binary's, for GET /v1/status.
	Version string
	// Handover, when set, starts the server as the new process of a live
	// upgrade (see Handover).
	Handover *Handover
	// Dial and Socket make the services' sockets after Start (origin
	// connections, UDP flows' and HTTP/3 connections' sockets), as
	// spectrum.Options and proxy.Options describe. Nil: in the namespace of
	// the thread that asks, which in production is every thread's; tests
	// serving in a namespace of their own pass netns's.
	Dial   func(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error)
	Socket func(domain, typ, proto int) (int, error)
}

// Server is a running edgeproxy.
type Server struct {
	cfg      *config.Plan
	log      *slog.Logger
	lock     *dispatch.Lock // the pin dir's: one writer; nil unpinned
	disp     *dispatch.Dispatcher
	Bindings *bindings.Manager
	store    bindings.Store // nil without store.path
	fleet    *fleet.Node    // nil on a single node
	Registry *prometheus.Registry
	// FDs is the process's descriptor budget, which the services share.
	FDs *fdlimit.Budget

	Spectrum *spectrum.Proxy // nil when the test gave spectrum's labels sockets
	CDN      *proxy.Proxy    // nil when the test gave the cdn's labels sockets
	access   io.Closer       // the access log's buffer

	adminLn    net.Listener
	adminSrv   *http.Server
	version    string
	started    time.Time
	generation int // upgrades that led to this process

	upgradeMu        sync.Mutex // guards the fields below
	state            string     // stateServing, stateHandingOver, stateDraining
	lastUpgradeError string
	handedOver       bool // an upgrade's new process serves: Shutdown drains flows too
	upgradesTotal    *prometheus.CounterVec
	required         []string // labels that must have a socket for readiness

	reloadMu   sync.Mutex // one reload at a time
	reloads    *prometheus.CounterVec
	lastReload prometheus.Gauge

	traffic     *traffic // the bindings' traffic, sampled
	stopTraffic context.CancelFunc
}

// Start takes the pin dir's lock, opens the dispatcher (taking over pinned
// state), applies the binding state of the configuration and the store,
// registers the sockets, attaches the program (the maps are written before
// the program sees traffic), and serves the admin API. Start must run on a
// thread in the network namespace to serve.
//
// One writer: with a pin dir, a second Start fails at once, naming the
// process that holds it, and changes nothing. Every step that can fail
// (configuration, store, guards, the admin listen address, the services'
// certificates and sockets) runs before the first map write or Register,
// so that a start that fails never disturbs a running instance. A corrupt
// store, or one that conflicts with the configuration, stops the start
// with an error naming the items; a store the process cannot write opens
// read-only (the node serves, API changes answer 503).
func Start(opts Options) (_ *Server, err error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("server: no configuration")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	token, err := readToken(cfg.Admin.TokenFile)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, Registry: prometheus.NewRegistry(), version: opts.Version, started: time.Now(), state: stateServing}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.lockPinDir(opts.Handover); err != nil {
		return nil, err
	}
	if err := s.checkHandover(opts.Handover); err != nil {
		return nil, err
	}
	guards, err := s.guards(cfg)
	if err != nil {
		return nil, err
	}
	// The store and the whole binding state: at once, or, for a live
	// upgrade, once the running process gave the writer role up.
	st := &startState{fromConfig: cfg.State, svc: cfg.Services, guards: guards, fromAPI: &bindings.State{}}
	if opts.Handover == nil {
		if err := st.load(cfg, log); err != nil {
			return nil, err
		}
	}
	adminSock, err := bindAdmin(cfg.Admin.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen: %w", err)
	}
	defer adminSock.Close() // listening, it is s.adminLn's

	if err := s.openDispatcher(opts.Handover, st); err != nil {
		return nil, err
	}
	sockets := maps.Clone(opts.Sockets)
	if sockets == nil {
		sockets = map[string]syscall.Conn{}
	}
	if err := s.startSpectrum(opts, sockets); err != nil {
		return nil, err
	}
	if err := s.startCDN(opts, sockets); err != nil {
		return nil, err
	}
	for label, conn := range sockets {
		if conn != nil {
			if err := dispatch.CheckSocket(label, conn); err != nil {
				return nil, err
			}
		}
	}
	if opts.Handover != nil {
		// Everything of our own is ready: ask for the writer role, then
		// read the store the running process no longer writes.
		if err := opts.Handover.WriterRole(); err != nil {
			return nil, fmt.Errorf("upgrade: the writer role: %w", err)
		}
		if err := st.load(cfg, log); err != nil {
			return nil, err
		}
	}
	if err := s.applyAndAttach(st, sockets); err != nil {
		return nil, err
	}
	if err := s.joinFleet(); err != nil {
		return nil, err
	}
	if err := s.serveAdmin(adminSock, opts.Handover != nil, token); err != nil {
		return nil, err
	}
	return s, nil
}

// startState is the binding state Start applies: the configuration's,
// and the store's once it is read.
type startState struct {
	fromConfig, fromAPI, initial *bindings.State
	svc                          bindings.Services
	guards                       []bindings.Guard
	store                        bindings.Store // nil without store.path
	rev                          int64          // the store's revision
}

// load reads the store and checks the configuration's and the store's
// state together.
func (st *startState) load(cfg *config.Plan, log *slog.Logger) (err error) {
	if cfg.Store.Path != "" {
		if st.store, err = openStore(cfg, log); err != nil {
			return err
		}
		if st.fromAPI, st.rev, err = st.store.Load(); err != nil {
			return err
		}
		if werr := st.store.Writable(); werr != nil {
			log.Warn("the store is read-only: the node serves its bindings, API changes are refused until it can be written", "store", st.store.String(), "error", werr)
		}
	}
	st.initial = bindings.Merge(st.fromConfig, st.fromAPI)
	if err := bindings.Validate(st.initial.Clone(), st.svc, st.guards); err != nil {
		if st.store != nil && len(st.fromAPI.Prefixes)+len(st.fromAPI.Bindings) > 0 {
			return fmt.Errorf("the configuration and the %s do not fit together: %w", st.store, err)
		}
		return err
	}
	logWarnings(log, cfg.Warnings(st.initial))
	return nil
}

// lockPinDir takes the pin dir's one-writer lock, or, for a live upgrade,
// the one the running process handed down.
func (s *Server) lockPinDir(h *Handover) (err error) {
	dir := s.cfg.PinDir()
	if dir == "" {
		return nil
	}
	if h != nil {
		s.lock, err = dispatch.AdoptLock(h.Lock, dir)
	} else {
		s.lock, err = dispatch.LockPinDir(dir)
	}
	if err != nil {
		return fmt.Errorf("dispatch.pin_dir: %w", err)
	}
	return nil
}

// openDispatcher opens the dispatcher, then the descriptor budget, and
// registers the process's own metrics.
func (s *Server) openDispatcher(h *Handover, st *startState) (err error) {
	dopts := dispatch.Options{PinDir: s.cfg.PinDir(), Lock: s.lock, BindingCapacity: s.cfg.BindingCapacity()}
	if h != nil {
		dopts.Link = h.Link
	}
	if s.disp, err = dispatch.Open(dopts); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	// The descriptor budget, once the dispatcher's maps are open: they are
	// counted in what is open at the start.
	if s.FDs, err = fdlimit.New(s.cfg.FDBudgetOptions()); err != nil {
		return err
	}
	s.log.Info("descriptor budget", "budget", s.FDs.String())
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgeproxy_config_reloads_total",
		Help: "Configuration reloads (SIGHUP) by result: ok, or error (the running configuration stayed).",
	}, []string{"result"})
	s.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "edgeproxy_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration was last loaded successfully (start or reload), Unix time.",
	})
	s.lastReload.SetToCurrentTime()
	storeReadOnly := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgeproxy_store_read_only",
		Help: "1 while the store cannot be written: the node serves, API changes are refused with 503.",
	}, func() float64 {
		if s.Bindings != nil && s.Bindings.Writable() != nil {
			return 1
		}
		return 0
	})
	s.upgradeMetrics()
	s.Registry.MustRegister(s.reloads, s.lastReload, storeReadOnly, s.disp.Collector(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), s.FDs)
	return nil
}

// startSpectrum starts spectrum, unless the caller gave both its labels
// sockets; its sockets go into sockets under the labels not given.
func (s *Server) startSpectrum(opts Options, sockets map[string]syscall.Conn) (err error) {
	cfg := s.cfg
	_, haveTCP := sockets[spectrumTCP]
	_, haveUDP := sockets[spectrumUDP]
	if haveTCP && haveUDP {
		return nil
	}
	s.Spectrum, err = spectrum.New(spectrum.Options{
		Apps: cfg.Apps, FDs: s.FDs, MaxConnections: cfg.Spectrum.MaxConnections,
		MaxFlows: cfg.Spectrum.MaxUDPFlows, MaxFlowsPerApp: cfg.Spectrum.MaxUDPFlowsPerApp,
		MaxDatagram: cfg.Spectrum.MaxDatagram, Dial: opts.Dial,
		Registerer: s.Registry, Logger: s.log.With("component", "spectrum"),
		Owns: func(udp bool, dst netip.AddrPort) bool {
			proto := dispatch.TCP
			if udp {
				proto = dispatch.UDP
			}
			return s.Bindings.Ownership().Owner(proto, dst.Addr(), dst.Port()) == bindings.Spectrum
		},
	})
	if err != nil {
		return err
	}
	if !haveTCP {
		sockets[spectrumTCP] = s.Spectrum.TCPListener()
	}
	if !haveUDP {
		sockets[spectrumUDP] = s.Spectrum.UDPConn()
	}
	s.FDs.Use(fdlimit.Spectrum)
	s.Spectrum.Start()
	return nil
}

// startCDN starts the cdn, unless the caller gave its labels sockets; its
// sockets go into sockets under the labels not given.
func (s *Server) startCDN(opts Options, sockets map[string]syscall.Conn) error {
	cfg := s.cfg
	_, haveTCP := sockets[cdnTCP]
	_, haveUDP := sockets[cdnUDP]
	if haveTCP && (!cfg.CDN.HTTP3 || haveUDP) {
		return nil
	}
	pcfg, err := cfg.ProxyConfig()
	if err != nil {
		return err
	}
	accessLog, closer, err := openAccessLog(cfg.CDN.AccessLog, cfg.Node)
	if err != nil {
		return err
	}
	s.access = closer
	s.CDN, err = proxy.New(proxy.Options{
		Config: pcfg, Limits: cfg.Limits, FDs: s.FDs, Dial: opts.Dial, Socket: opts.Socket,
		// Every HTTP/3 handshake asks: the lock-free snapshot, never
		// Resolve, which scans under the lock the admin API needs.
		OwnsHTTP3: func(dst netip.AddrPort) bool {
			return s.Bindings.OwnsCDN(dispatch.UDP, dst.Addr(), dst.Port())
		},
		OwnsTCP: func(dst netip.AddrPort) bool {
			return s.Bindings.OwnsCDN(dispatch.TCP, dst.Addr(), dst.Port())
		},
		Registerer: s.Registry, Logger: s.log.With("component", "cdn"), AccessLog: accessLog,
		QUICResetKeyFile: cfg.QUICResetKeyPath(),
	})
	if err != nil {
		return err
	}
	if !haveTCP {
		sockets[cdnTCP] = s.CDN.TCPListener()
	}
	if !haveUDP && s.CDN.UDPConn() != nil {
		sockets[cdnUDP] = s.CDN.UDPConn()
	}
	s.FDs.Use(fdlimit.CDN, fdlimit.Dial)
	return s.CDN.Start()
}

// The services' sockets' labels.
var (
	spectrumTCP, spectrumUDP = bindings.Label(bindings.Spectrum, dispatch.TCP), bindings.Label(bindings.Spectrum, dispatch.UDP)
	cdnTCP, cdnUDP           = bindings.Label(bindings.CDN, dispatch.TCP), bindings.Label(bindings.CDN, dispatch.UDP)
)

// applyAndAttach makes the binding manager, writes the binding state into
// the data plane, registers the sockets and attaches the program.
func (s *Server) applyAndAttach(st *startState, sockets map[string]syscall.Conn) error {
	d := s.disp
	s.Bindings = bindings.NewManager(d, st.store)
	s.store = st.store
	s.Bindings.Adopt(st.fromAPI, st.rev)
	s.Bindings.SetLabels(s.cfg.Labels)
	s.Bindings.OnAudit = s.auditLine
	applySeconds := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "edgeproxy_bindings_apply_seconds",
		Help:    "Time to write a changed binding table into the data plane.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5, 10},
	})
	s.Bindings.OnApply = func(d time.Duration) {
		applySeconds.Observe(d.Seconds())
		if s.CDN != nil {
			s.CDN.Reowned() // connections on addresses that left the cdn go
		}
	}
	s.traffic = newTraffic(d.BindingCounters, s.Bindings)
	var tctx context.Context
	tctx, s.stopTraffic = context.WithCancel(context.Background())
	go s.traffic.run(tctx)
	s.Registry.MustRegister(s.Bindings.Collector(), applySeconds, s.traffic)
	// The first write into the data plane: everything that could fail
	// without touching it has run. (For a live upgrade these maps are our
	// own until Attach swaps them in.)
	if err := s.Bindings.Apply(st.initial, st.svc, st.guards); err != nil {
		return fmt.Errorf("apply the binding state: %w", err)
	}
	for label, conn := range sockets {
		if conn == nil {
			continue
		}
		if err := d.Register(label, conn); err != nil {
			return err
		}
		s.required = append(s.required, label)
	}
	if err := d.Attach(); err != nil {
		return err
	}
	s.log.Info("dispatcher attached", "pin_dir", s.cfg.PinDir(), "prefixes", len(st.fromConfig.Prefixes)+len(st.fromAPI.Prefixes),
		"bindings", len(st.fromConfig.Bindings)+len(st.fromAPI.Bindings), "apps", len(st.svc.Apps))
	return nil
}

// serveAdmin listens on the bound admin socket and serves the API; for a
// live upgrade with binding changes held until the handover is confirmed.
func (s *Server) serveAdmin(adminSock *os.File, upgrading bool, token string) (err error) {
	if s.adminLn, err = listenAdmin(adminSock); err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	// The admin API's connections stay within its reserve of the budget:
	// more wait in the listen queue.
	s.adminLn = netutil.LimitListener(s.adminLn, max(s.FDs.AdminReserve(), 8))
	if upgrading {
		// Until the running process confirms the handover (Confirmed) it
		// may still take the data plane back: no change may land here.
		s.Bindings.Hold("an upgrade is in progress: the new process waits for the old one to confirm the handover")
	}
	adminLog := s.log.With("component", "admin")
	s.adminSrv = &http.Server{
		Handler: admin.Handler(admin.Options{
			Bindings: s.Bindings, Token: token, Ready: s.ready, Registry: s.Registry,
			Logger: adminLog, Origins: s.origins(),
			// Not while the store cannot be written (a change could
			// not be persisted): the manager knows its store.
			Writable: s.Bindings.Writable, Status: s.status, Drain: s.drain,
			Fleet: s.fleetView(), Audit: s.auditLog(), Traffic: s.traffic.of,
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// net/http's own lines (a connection it could not serve) go
		// where the API's go, as JSON, not to the standard logger.
		ErrorLog: slog.NewLogLogger(adminLog.Handler(), slog.LevelWarn),
	}
	go s.adminSrv.Serve(s.adminLn)
	s.log.Info("admin API listening", "addr", s.adminLn.Addr().String(), "token", token != "")
	return nil
}

// readToken reads the admin token; an empty path means none.
func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin.token_file: %s is empty", path)
	}
	return tok, nil
}

// guards returns the addresses no prefix may contain: the configuration's
// (admin listen address, origins) and every address assigned to an
// interface of the namespace, as `ip addr` lists them. Addresses merely
// covered by a local route are not assigned, and may be steered.
func (s *Server) guards(cfg *config.Plan) ([]bindings.Guard, error) {
	gs := slices.Clone(cfg.Guards)
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list the interfaces' addresses: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("list the addresses of interface %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			gs = append(gs, bindings.Guard{Addr: ip, What: fmt.Sprintf("address %s of interface %s", ip, ifc.Name)})
		}
	}
	return gs, nil
}

// ready reports whether every required label has a socket.
func (s *Server) ready() error {
	var missing []string
	for _, l := range s.required {
		if _, ok := s.disp.Cookie(l); !ok {
			missing = append(missing, l)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no socket registered for %s", strings.Join(missing, ", "))
	}
	return nil
}

// AdminAddr returns the address the admin API listens on.
func (s *Server) AdminAddr() net.Addr { return s.adminLn.Addr() }

// Dispatcher returns the server's dispatcher.
func (s *Server) Dispatcher() *dispatch.Dispatcher { return s.disp }

// Shutdown stops the server: the services stop taking connections and
// drain until ctx is done, the admin API stops, the dispatcher closes.
// Unpinned, the program detaches; pinned, bound prefixes stay closed until
// the next process serves them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.upgradeMu.Lock()
	s.state = stateDraining
	handedOver := s.handedOver
	s.upgradeMu.Unlock()
	var errs []error
	if s.fleet != nil {
		// Out of the fleet at once, unless the new process of an upgrade
		// serves this node on: then its own lease keeps the node key.
		errs = append(errs, s.fleet.Close(!handedOver))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, stop := range []func(context.Context) error{s.spectrumShutdown, s.cdnShutdown} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := stop(ctx)
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if s.access != nil {
		s.access.Close()
	}
	if s.adminSrv != nil {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		errs = append(errs, s.adminSrv.Shutdown(actx))
		cancel()
	} else if s.adminLn != nil {
		s.adminLn.Close()
	}
	if s.stopTraffic != nil {
		s.stopTraffic()
	}
	if s.disp != nil {
		errs = append(errs, s.disp.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	errs = append(errs, s.lock.Close())
	return errors.Join(errs...)
}

// drain closes, once d has passed, the connections and flows still held on
// addresses that left their service: a move's drain deadline.
func (s *Server) drain(d time.Duration) {
	time.AfterFunc(d, func() {
		var cdn, spec int
		if s.CDN != nil {
			cdn = s.CDN.CloseUnowned()
		}
		if s.Spectrum != nil {
			spec = s.Spectrum.CloseUnowned()
		}
		if cdn+spec > 0 {
			s.log.Info("drain deadline passed: connections on moved addresses closed", "drain_s", d.Seconds(), "cdn", cdn, "spectrum", spec)
		}
	})
}

// status is GET /v1/status.
func (s *Server) status() admin.Status {
	s.upgradeMu.Lock()
	defer s.upgradeMu.Unlock()
	ok, failed := counterValue(s.upgradesTotal, "ok"), counterValue(s.upgradesTotal, "failed")
	return admin.Status{
		Node: s.cfg.Node, PID: os.Getpid(), Version: s.version, StartedAt: s.started, State: s.state,
		Upgrades: admin.Upgrades{Generation: s.generation, OK: ok, Failed: failed, LastError: s.lastUpgradeError},
	}
}

// origins is the admin API's view of the cdn's origins, nil without the cdn.
func (s *Server) origins() func() any {
	if s.CDN == nil {
		return nil
	}
	return func() any { return s.CDN.Origins() }
}

func (s *Server) spectrumShutdown(ctx context.Context) error {
	if s.Spectrum == nil {
		return nil
	}
	s.upgradeMu.Lock()
	handedOver := s.handedOver
	s.upgradeMu.Unlock()
	if handedOver {
		return s.Spectrum.Drain(ctx) // its flows too: the new process serves beside it
	}
	return s.Spectrum.Shutdown(ctx)
}

func (s *Server) cdnShutdown(ctx context.Context) error {
	if s.CDN == nil {
		return nil
	}
	return s.CDN.Shutdown(ctx)
}

// Close is Shutdown with a grace period of a few seconds.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// openStore opens the store at store.path. The default path, when it is
// missing, takes the JSON store at the old default path, if there is one:
// moved (one rename) and imported.
func openStore(cfg *config.Plan, log *slog.Logger) (bindings.Store, error) {
	if cfg.Store.Path == config.DefaultStorePath {
		if _, err := os.Stat(cfg.Store.Path); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(config.LegacyStorePath); err == nil {
				if err := os.Rename(config.LegacyStorePath, cfg.Store.Path); err != nil {
					return nil, fmt.Errorf("store.path: take the JSON store at %s, the old default: %w", config.LegacyStorePath, err)
				}
				log.Info("the JSON store at the old default path moves to the new one, to be imported", "from", config.LegacyStorePath, "to", cfg.Store.Path)
			}
		}
	}
	s, err := store.Open(cfg.Store.Path, store.Options{
		AuditRetention: cfg.Store.AuditRetention, Logger: log.With("component", "store"), Prefixes: cfg.State.Prefixes,
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// auditLine logs an applied change: one line, its fields as JSON, not
// HTML-escaped ("->", as the API writes it).
func (s *Server) auditLine(e bindings.AuditEntry) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(e)
	s.log.Info("audit", "change", json.RawMessage(bytes.TrimSuffix(b.Bytes(), []byte("\n"))))
}

// logWarnings logs the configuration's warnings, one line each, as
// edgeproxy check prints them.
func logWarnings(log *slog.Logger, ws []config.Warning) {
	for _, w := range ws {
		log.Warn(w.String())
	}
}
