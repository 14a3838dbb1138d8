package server

import (
	"io"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// Reload applies a new configuration to the running server, all or nothing:
// the services take their new sites and apps first (so that traffic the
// data plane starts steering finds them ready), then the binding state
// changes in one atomic step. If any step fails, what was applied is put
// back and the running configuration stays. Connections are never
// dropped: established ones keep their socket and their app or site.
// Keys that need new sockets (listen addresses, ports of HTTP/3, the
// store, the data plane's pinning) cannot change by reload
// (config.RestartKeys); a file that changes them is refused, naming them. The cdn's limits and timeouts
// take effect for new connections and requests (proxy.SetLimits). The
// access log is opened again at every reload: a new path takes effect,
// and a rotated file is followed.
func (s *Server) Reload(next *config.Plan) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return s.counted(next, s.reload(next))
}

// ReloadFile loads path and reloads it; a file that does not load counts
// as a failed reload too.
func (s *Server) ReloadFile(path string) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	next, err := config.Load(path)
	if err == nil {
		err = s.reload(next)
	}
	return s.counted(next, err)
}

func (s *Server) counted(next *config.Plan, err error) error {
	if err != nil {
		s.reloads.WithLabelValues("error").Inc()
		return err
	}
	s.reloads.WithLabelValues("ok").Inc()
	s.lastReload.SetToCurrentTime()
	s.cfg = next
	return nil
}

func (s *Server) reload(next *config.Plan) error {
	if err := s.upgrading(); err != nil {
		return err
	}
	if err := config.CheckReload(s.cfg.Config, next.Config); err != nil {
		return err
	}
	guards, err := s.guards(next)
	if err != nil {
		return err
	}

	// The access log is opened again (a new path, or the same after a
	// rotation), before anything changes: a path that does not open refuses
	// the reload.
	var accessLog *proxy.AccessLog
	var accessCloser io.Closer
	if s.CDN != nil {
		if accessLog, accessCloser, err = openAccessLog(next.CDN.AccessLog, next.Node); err != nil {
			return err
		}
	}
	var undo []func()
	if accessCloser != nil {
		undo = append(undo, func() { accessCloser.Close() })
	}
	rollback := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	if s.CDN != nil {
		pcfg, err := next.ProxyConfig()
		if err != nil {
			rollback()
			return err
		}
		old := s.CDN.Config()
		if err := s.CDN.SetConfig(pcfg); err != nil {
			rollback()
			return err
		}
		undo = append(undo, func() { s.CDN.SetConfig(old) })
		oldLim := s.CDN.Limits()
		s.CDN.SetLimits(next.Limits)
		undo = append(undo, func() { s.CDN.SetLimits(oldLim) })
	}
	if s.Spectrum != nil {
		old := s.Spectrum.Apps()
		if err := s.Spectrum.SetApps(next.Apps); err != nil {
			rollback()
			return err
		}
		undo = append(undo, func() { s.Spectrum.SetApps(old) })
	}
	if err := s.Bindings.Reconfigure(next.State, next.Services, guards); err != nil {
		rollback()
		return err
	}
	st, _ := s.Bindings.Current()
	logWarnings(s.log, next.Warnings(st))
	if s.CDN != nil {
		var closeOld func() error
		if s.access != nil {
			closeOld = s.access.Close
		}
		if err := s.CDN.SetAccessLog(accessLog, closeOld); err != nil {
			s.log.Warn("reload: closing the access log it replaced", "error", err)
		}
		s.access = accessCloser
	}
	return nil
}
