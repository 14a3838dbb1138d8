// Package server wires edgeproxy together: the dispatcher, the binding state
// from the configuration, and the sockets of the services. The binary runs
// it; tests start it in process and hand it named sockets for the service
// labels.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Options configure a Server.
type Options struct {
	Config *config.Config
	// Sockets are registered with the dispatcher under their labels
	// (bindings.Labels), in place of the services' own sockets. A label
	// without a socket drops its traffic: fail closed.
	Sockets map[string]syscall.Conn
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server is a running edgeproxy.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	disp     *dispatch.Dispatcher
	Bindings *bindings.Manager
}

// Start opens the dispatcher (taking over pinned state), applies the binding
// state of the configuration, registers the sockets, and attaches the
// program: the maps are written before the program sees traffic. Start must
// run on a thread in the network namespace to serve.
func Start(opts Options) (_ *Server, err error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("server: no configuration")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := cfg.BindingState()
	if err != nil {
		return nil, err
	}
	svc, err := cfg.Services()
	if err != nil {
		return nil, err
	}

	d, err := dispatch.Open(dispatch.Options{PinDir: cfg.PinDir()})
	if err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	s := &Server{cfg: cfg, log: log, disp: d, Bindings: bindings.NewManager(d)}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if err := s.Bindings.Apply(st, svc, cfg.Guards()); err != nil {
		return nil, err
	}
	for label, conn := range opts.Sockets {
		if err := d.Register(label, conn); err != nil {
			return nil, err
		}
	}
	if err := d.Attach(); err != nil {
		return nil, err
	}
	log.Info("dispatcher attached", "pin_dir", cfg.PinDir(), "prefixes", len(st.Prefixes), "bindings", len(st.Bindings), "apps", len(svc.Apps))
	return s, nil
}

// Dispatcher returns the server's dispatcher.
func (s *Server) Dispatcher() *dispatch.Dispatcher { return s.disp }

// Close stops the server. Unpinned, the program detaches; pinned, bound
// prefixes stay closed until the next process serves them.
func (s *Server) Close() error {
	return s.disp.Close()
}
