package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/internal/sockns"
)

// origin is an origin server with its keep-alive connection pool. There is
// one per origin URL for the whole process, shared by every site and
// protocol that forwards to it, kept across reloads.
type origin struct {
	url    *url.URL
	name   string // scheme://host:port, for logs and metrics
	scheme []byte // what the request URI must carry for hc
	hc     *fasthttp.HostClient
}

// upstreamTimeouts bound the work with an origin.
type upstreamTimeouts struct {
	connect time.Duration // dial
	read    time.Duration // each read: the response head, then every gap in the body
	write   time.Duration // each write of the request
}

// originPools keeps the shared pools.
type originPools struct {
	here *sockns.Here

	mu    sync.Mutex // guards pools and t
	pools map[string]*origin
	t     upstreamTimeouts
}

// get returns the pool of u, creating it.
func (op *originPools) get(u *url.URL) *origin {
	op.mu.Lock()
	defer op.mu.Unlock()
	key := originKey(u)
	if o := op.pools[key]; o != nil {
		return o
	}
	isTLS := u.Scheme == "https"
	o := &origin{url: u, name: key, scheme: []byte(u.Scheme)}
	t := op.t
	o.hc = &fasthttp.HostClient{
		Addr:      hostPort(u),
		IsTLS:     isTLS,
		TLSConfig: &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12},
		Dial: func(addr string) (net.Conn, error) {
			var c net.Conn
			var err error
			op.here.Do(func() { c, err = (&net.Dialer{Timeout: t.connect}).Dial("tcp", addr) })
			if err != nil {
				return nil, err
			}
			return &idleConn{Conn: c, read: t.read, write: t.write}, nil
		},
		MaxConns:                      4096,
		MaxIdleConnDuration:           60 * time.Second,
		MaxConnWaitTimeout:            t.connect,
		StreamResponseBody:            true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		NoDefaultUserAgentHeader:      true,
		// One attempt: retries come with the origin pools' budget.
		MaxIdemponentCallAttempts: 1,
	}
	op.pools[key] = o
	return o
}

func originKey(u *url.URL) string { return u.Scheme + "://" + hostPort(u) }

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// idleConn bounds each read and each write of an upstream connection, so
// that a slow origin is cut after a gap rather than after a total that a
// long download would exceed. A deadline is moved only once half of it is
// used up, which keeps the runtime's timer out of most reads: a gap is cut
// after between half the timeout and the timeout.
type idleConn struct {
	net.Conn
	read, write       time.Duration
	readDue, writeDue time.Time
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.read > 0 {
		if now := time.Now(); c.readDue.Sub(now) < c.read/2 {
			c.readDue = now.Add(c.read)
			c.Conn.SetReadDeadline(c.readDue)
		}
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if c.write > 0 {
		if now := time.Now(); c.writeDue.Sub(now) < c.write/2 {
			c.writeDue = now.Add(c.write)
			c.Conn.SetWriteDeadline(c.writeDue)
		}
	}
	return c.Conn.Write(p)
}

// upstreamStatus is the status of a response the proxy makes for an
// upstream error: 504 for a timeout, 503 when the pool is exhausted, 502
// for the rest.
func upstreamStatus(err error) int {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return 504
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return 503
	}
	return 502
}
