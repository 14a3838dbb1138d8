package proxy

import (
	"sync"

	"github.com/valyala/fasthttp"
)

// Limits and timeouts change at run time (SetLimits, on a reload): every
// use reads them from one atomically swapped value, p.limits(), when a
// connection, a request or a wait starts. What the servers of other
// packages fix when they are made (fasthttp's read buffer, which is
// max_header_bytes; http3's header bound and idle timeout) lives in a
// generation of servers (servers): a change of those makes new servers
// for new connections, and the old ones serve the connections they have
// until these end, then go.

// limits returns the limits in force.
func (p *Proxy) limits() *Limits { return p.lim.Load() }

// Limits returns the limits in force, defaults applied.
func (p *Proxy) Limits() Limits { return *p.lim.Load() }

// SetLimits replaces the limits and timeouts; zero values take the
// defaults. It cannot fail: the values are checked where they are
// decoded (config). New connections and new requests take the new
// values; established connections keep running (docs/config.md says
// which value each key takes for them).
func (p *Proxy) SetLimits(l Limits) {
	l.SetDefaults()
	p.srvMu.Lock()
	defer p.srvMu.Unlock()
	old := p.lim.Load()
	if l == *old {
		return
	}
	if l.MaxHeaderBytes != old.MaxHeaderBytes || l.IdleTimeout != old.IdleTimeout {
		p.newServersLocked(&l)
	}
	p.lim.Store(&l)
	p.resets.setBudgets(l.ConnResetBudget, l.ClientResetBudget, l.ResetBan)
	p.pools.setTimeouts(&l)
	if p.amp != nil {
		p.amp.setTTL(3 * l.QUICHandshakeTimeout)
	}
	if p.qs != nil {
		p.qs.setMaxPerAddr(l.MaxQUICSocketsPerAddress)
	}
}

// servers are the servers made with one version of the limits: fasthttp's
// for the connections the HTTP/1.1 engine hands over. (Each HTTP/3
// connection has an http3 server of its own, made with the limits in
// force when it starts: h3.go.) Each connection takes the generation current when
// it reaches them (use) and keeps it; a generation that is no longer
// current goes when its last connection ends.
type servers struct {
	h1, h1TLS     *fasthttp.Server
	plain, secure *chanListener // deliver nothing: there for the servers' Shutdown

	mu      sync.Mutex // guards users and retired
	users   int
	retired bool
}

// newServersLocked makes the current generation of servers from l; under
// srvMu. The one it replaces goes once its connections have.
func (p *Proxy) newServersLocked(l *Limits) {
	if p.stopped {
		return // Shutdown has the generations it waits for
	}
	s := &servers{plain: newChanListener(p.tcp.Addr()), secure: newChanListener(p.tcp.Addr())}
	s.h1, s.h1TLS = p.newH1Server(l), p.newH1Server(l)
	if p.srvs == nil {
		p.srvs = map[*servers]struct{}{}
	}
	p.srvs[s] = struct{}{}
	if p.started {
		p.serveServers(s)
	}
	old := p.srv.Swap(s)
	if old == nil {
		return
	}
	old.mu.Lock()
	retire := old.users == 0 && !old.retired
	old.retired = old.retired || retire
	old.mu.Unlock()
	if retire {
		p.retireLocked(old)
	}
}

// serveServers starts the fasthttp servers' Serve on their listeners,
// which only their Shutdown ends.
func (p *Proxy) serveServers(s *servers) {
	p.wg.Add(2)
	go func() { defer p.wg.Done(); s.h1.Serve(s.plain) }()
	go func() { defer p.wg.Done(); s.h1TLS.Serve(s.secure) }()
}

// useServers returns the current generation, counted as used until
// doneServers.
func (p *Proxy) useServers() *servers {
	for {
		s := p.srv.Load()
		s.mu.Lock()
		if !s.retired {
			s.users++
			s.mu.Unlock()
			return s
		}
		s.mu.Unlock() // replaced and gone since the load: take the new one
	}
}

// doneServers ends a use of s; the last use of a replaced generation
// makes it go.
func (p *Proxy) doneServers(s *servers) {
	s.mu.Lock()
	s.users--
	retire := s.users == 0 && !s.retired && p.srv.Load() != s
	s.retired = s.retired || retire
	s.mu.Unlock()
	if retire {
		p.srvMu.Lock()
		p.retireLocked(s)
		p.srvMu.Unlock()
	}
}

// retireLocked stops a generation that serves no connection; under srvMu.
func (p *Proxy) retireLocked(s *servers) {
	delete(p.srvs, s)
	s.plain.Close() // their Serve returns
	s.secure.Close()
}

// allServers returns every generation still serving, for Shutdown; later
// changes of the limits make no new ones.
func (p *Proxy) allServers() []*servers {
	p.srvMu.Lock()
	defer p.srvMu.Unlock()
	p.stopped = true
	out := make([]*servers, 0, len(p.srvs))
	for s := range p.srvs {
		out = append(out, s)
	}
	return out
}

// newH1Server makes a fasthttp server for handed-over connections.
func (p *Proxy) newH1Server(l *Limits) *fasthttp.Server {
	// No ReadTimeout or IdleTimeout: the read deadlines (the head,
	// keep-alive idle) are connState's, from the coarse clock, where
	// fasthttp would read the clock for each. WriteTimeout stays: it
	// bounds each response, and HeaderReceived gives every request the
	// send timeout and the body limit in force.
	return &fasthttp.Server{
		Handler:        p.serveH1,
		HeaderReceived: p.h1RequestConfig,
		Name:           "edgeproxy",
		// The head must fit: fixed for the server's life, so a change
		// of max_header_bytes makes a new generation.
		ReadBufferSize:                l.MaxHeaderBytes,
		WriteTimeout:                  l.SendTimeout,
		MaxRequestBodySize:            int(l.MaxBodyBytes),
		StreamRequestBody:             true,
		DisableHeaderNamesNormalizing: true,
		ErrorHandler:                  p.parseErrorH1, // refused heads get a request id, a log line and a sample
		DisablePreParseMultipartForm:  true,
		NoDefaultContentType:          true,
		CloseOnShutdown:               true,
		ConnState:                     p.connState,
		Logger:                        debugLogger{p.log},
	}
}

// h1RequestConfig gives each request on the fasthttp path the send
// timeout and the body limit in force when its head arrived.
func (p *Proxy) h1RequestConfig(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	l := p.limits()
	return fasthttp.RequestConfig{WriteTimeout: l.SendTimeout, MaxRequestBodySize: int(l.MaxBodyBytes)}
}
