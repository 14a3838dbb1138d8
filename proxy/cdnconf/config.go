// Package cdnconf is the cdn's configuration as the proxy takes it: the
// sites, their routes and origins, the health checks, retries and limits,
// their defaults, and CheckSites, the rules every set of sites keeps. It
// imports nothing of the kernel, so that config builds on any OS;
// package proxy serves it and names its types as its own.
package cdnconf

import (
	"crypto/tls"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
)

// Config is what the proxy serves; SetConfig swaps it at run time.
type Config struct {
	HTTPPorts, HTTPSPorts []uint16
	HTTP3                 bool
	HTTP3Port             uint16
	Certificates          []Certificate
	Sites                 []Site
	// LoopID is our CDN-Loop token (RFC 8586); a request that carries it
	// already is refused with 508. Empty: "edgeproxy".
	LoopID string
}

// Certificate is a certificate chain with its key. Default marks the one
// presented when no site's name matches.
type Certificate struct {
	tls.Certificate
	Default bool
	// Source names it in metrics and errors (a file name).
	Source string
}

// Limits bound what a client may do. Zero values take the defaults.
type Limits struct {
	MaxHeaderBytes int   // request line and headers; default 32 KiB
	MaxBodyBytes   int64 // request body; default 100 MiB
	MaxConnections int   // concurrent client connections; default from the open-file limit

	ReadHeaderTimeout time.Duration // to read a request's head; default 10s
	BodyTimeout       time.Duration // between two reads of a request body; default 60s
	SendTimeout       time.Duration // between two writes of a response; default 60s
	IdleTimeout       time.Duration // keep-alive wait for the next request; default 75s

	UpstreamConnectTimeout time.Duration // dial an origin; default 5s
	UpstreamTimeout        time.Duration // each read from an origin; default 60s
	TunnelIdleTimeout      time.Duration // an upgraded connection without traffic either way; default 10m

	// Floods (proxy/floods.go).
	MaxStreams           int           // HTTP/2 and HTTP/3 requests in flight, whole process; default 8192
	ConnResetBudget      int           // resets a connection may make in 10s before it is closed; default 200
	ClientResetBudget    int           // resets a client address (IPv6: /64) may make in 10s before it is banned; default 1000
	ResetBan             time.Duration // how long a banned client's connections are refused; default 60s
	MaxQUICHandshakes    int           // QUIC handshakes in flight; default 1024
	QUICRetryThreshold   int           // handshakes in flight from which Initials get a Retry; default 64
	QUICHandshakeTimeout time.Duration // a QUIC handshake without progress; default 2s
	// MaxQUICSocketsPerAddress bounds the connected sockets (one per HTTP/3
	// connection) on one dialled address; past it a connection stays on
	// the listener. Each costs every new-flow datagram to that address a
	// step of the kernel's lookup. Default 1024.
	MaxQUICSocketsPerAddress int
}

// SetDefaults gives every zero value its default.
func (l *Limits) SetDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 32 << 10
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = 100 << 20
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = fdlimit.Pairs()
	}
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.BodyTimeout, 60*time.Second)
	def(&l.SendTimeout, 60*time.Second)
	def(&l.IdleTimeout, 75*time.Second)
	def(&l.UpstreamConnectTimeout, 5*time.Second)
	def(&l.UpstreamTimeout, 60*time.Second)
	def(&l.TunnelIdleTimeout, 10*time.Minute)
	pos := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	pos(&l.MaxStreams, 8192)
	pos(&l.ConnResetBudget, 200)
	pos(&l.ClientResetBudget, 1000)
	def(&l.ResetBan, time.Minute)
	pos(&l.MaxQUICHandshakes, 1024)
	pos(&l.QUICRetryThreshold, 64)
	def(&l.QUICHandshakeTimeout, 2*time.Second)
	pos(&l.MaxQUICSocketsPerAddress, 1024)
}
