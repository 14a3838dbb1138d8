package load

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/valyala/fasthttp"
)

// HTTPOptions configures HTTP.
type HTTPOptions struct {
	URL   string // http:// or https://; h2 over http:// is cleartext with prior knowledge (h2c)
	Proto string // "h1" (default), "h2" or "h3" (https only)
	// Rate is requests per second, all connections together, sent open loop
	// at fixed intervals from the start; 0 is a closed loop, each worker
	// sending its next request as soon as its last one is answered.
	Rate     float64
	Duration time.Duration // default 10 s
	Conns    int           // connections, default 1
	Streams  int           // h2/h3: concurrent requests per connection, default 1 (h1 always 1)
	Timeout  time.Duration // per request, default 5 s

	Host   string      // the Host header (:authority), default the URL's
	Header http.Header // extra request headers

	Insecure   bool           // skip certificate verification
	RootCAs    *x509.CertPool // trust these instead of the system's
	ServerName string         // TLS SNI and verification name, default the URL's host

	// LocalAddr binds the client's sockets to this IP (e.g. 127.0.0.1).
	// HTTP/3 needs it when the server is on a locally routed prefix: an
	// unbound UDP socket would send from, and get replies steered to, an
	// address of the prefix.
	LocalAddr string
	// Dial, if set, opens the TCP connections (h1, h2), e.g. inside a
	// network namespace; it replaces LocalAddr for them.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ListenPacket, if set, makes each HTTP/3 connection's UDP socket on
	// LocalAddr, e.g. inside a network namespace. Nil: net.ListenConfig's.
	ListenPacket func(ctx context.Context, network, address string) (net.PacketConn, error)
}

// HTTPResult is what HTTP measured. Requests counts every request sent
// (answered or failed) after the warm-up; Errors those that failed or were
// answered with a status of 400 or more; Latency holds the successful ones',
// from their intended send time in an open loop (from the actual send in a
// closed loop), plus the Unsent ones at the latency they had reached when
// the run ended. Rate is successful requests per second of Duration, the
// wall time from the start until the last answer.
type HTTPResult struct {
	Requests, Errors int
	Unsent           int // open loop: planned but never sent, every connection busy
	Duration         time.Duration
	Latency          *Histogram
	Rate             float64
	FirstError       string // the first error seen, for diagnosis
	Redials          int    // h2, h3: connections dialed again (closed by the server or GOAWAY)
}

// HTTP runs an HTTP load: Conns connections (HTTP/1.1: one request at a
// time each; HTTP/2 and HTTP/3: Streams at a time each), opened and warmed
// with one request each before the clock starts, then requests at Rate (or
// as fast as they are answered) for Duration.
func HTTP(ctx context.Context, o HTTPOptions) (*HTTPResult, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("load: URL %q: want http:// or https://", o.URL)
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	o.Conns = max(o.Conns, 1)
	o.Streams = max(o.Streams, 1)
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Host == "" {
		o.Host = u.Host
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	tlsConf := &tls.Config{InsecureSkipVerify: o.Insecure, RootCAs: o.RootCAs, ServerName: o.ServerName}
	if tlsConf.ServerName == "" {
		tlsConf.ServerName = u.Hostname()
	}
	dial := o.Dial
	if dial == nil {
		var err error
		if dial, err = dialer(o.LocalAddr); err != nil {
			return nil, err
		}
	}

	var c client
	switch o.Proto {
	case "", "h1", "http/1.1":
		c, err = newH1(u, addr, o, tlsConf, dial)
	case "h2":
		c, err = newH2(ctx, u, addr, o, tlsConf, dial)
	case "h3":
		if u.Scheme != "https" {
			return nil, errors.New("load: HTTP/3 needs an https:// URL")
		}
		c, err = newH3(ctx, addr, o, tlsConf)
	default:
		return nil, fmt.Errorf("load: unknown protocol %q (h1, h2 or h3)", o.Proto)
	}
	if err != nil {
		return nil, err
	}
	defer c.close()

	workers := c.workers()
	warm := make(chan error, workers)
	for w := range workers {
		go func() { warm <- c.do(ctx, w) }()
	}
	var warmErr error
	for range workers {
		if err := <-warm; err != nil && warmErr == nil {
			warmErr = err
		}
	}
	if warmErr != nil {
		return nil, fmt.Errorf("load: warm-up request: %w", warmErr)
	}

	s := newSchedule(ctx, o.Rate, o.Duration)
	total, elapsed, unsent := drive(ctx, s, workers, c.do)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &HTTPResult{
		Requests: total.requests, Errors: total.errors, Unsent: unsent,
		Duration: elapsed, Latency: total.hist,
		Rate:    float64(total.requests-total.errors) / elapsed.Seconds(),
		Redials: c.redials(),
	}
	if total.firstErr != nil {
		r.FirstError = total.firstErr.Error()
	}
	return r, nil
}

// A client sends one request for worker w and reads the whole answer.
type client interface {
	workers() int
	do(ctx context.Context, w int) error
	redials() int // connections dialed again during the run
	close()
}

type statusError int

func (e statusError) Error() string { return fmt.Sprintf("status %d", int(e)) }

// h1 is HTTP/1.1 on fasthttp's HostClient: Conns workers, each one request
// at a time, sharing a pool of at most Conns keep-alive connections; no
// retries, so every failure counts.
type h1 struct {
	hc    *fasthttp.HostClient
	conns int
	reqs  []*fasthttp.Request
	resps []*fasthttp.Response
}

func newH1(u *url.URL, addr string, o HTTPOptions, tlsConf *tls.Config, dial func(context.Context, string, string) (net.Conn, error)) (*h1, error) {
	c := &h1{
		hc: &fasthttp.HostClient{
			Addr:                      addr,
			IsTLS:                     u.Scheme == "https",
			TLSConfig:                 tlsConf,
			MaxConns:                  o.Conns,
			MaxIdemponentCallAttempts: 1,
			ReadTimeout:               o.Timeout,
			WriteTimeout:              o.Timeout,
			MaxConnWaitTimeout:        o.Timeout,
			NoDefaultUserAgentHeader:  true,
			Dial: func(addr string) (net.Conn, error) {
				ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
				defer cancel()
				return dial(ctx, "tcp", addr)
			},
		},
		conns: o.Conns,
	}
	for range o.Conns {
		req := fasthttp.AcquireRequest()
		req.SetRequestURI(u.String())
		req.Header.SetHost(o.Host)
		for k, vs := range o.Header {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
		c.reqs = append(c.reqs, req)
		c.resps = append(c.resps, fasthttp.AcquireResponse())
	}
	return c, nil
}

func (c *h1) workers() int { return c.conns }

// redials is not counted for HTTP/1.1: fasthttp reconnects on its own.
func (c *h1) redials() int { return 0 }

func (c *h1) do(_ context.Context, w int) error {
	resp := c.resps[w]
	resp.Reset()
	if err := c.hc.Do(c.reqs[w], resp); err != nil {
		return err
	}
	if s := resp.StatusCode(); s >= 400 {
		return statusError(s)
	}
	return nil
}

func (c *h1) close() {
	c.hc.CloseIdleConnections()
	for i := range c.reqs {
		fasthttp.ReleaseRequest(c.reqs[i])
		fasthttp.ReleaseResponse(c.resps[i])
	}
}

// stdRequest builds a net/http request for h2 and h3.
func stdRequest(ctx context.Context, u *url.URL, o HTTPOptions) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Host = o.Host
	for k, vs := range o.Header {
		req.Header[k] = vs
	}
	return req, nil
}

// finish reads and closes a response, checking its status.
func finish(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		return statusError(resp.StatusCode)
	}
	return nil
}

// A slot is one connection of h2 or h3, shared by Streams workers, dialed
// again when the server has closed it or sent GOAWAY (nginx does after
// keepalive_requests, 1,000 by default).
type slot[C any] struct {
	mu   sync.Mutex
	conn C
	ok   bool
}

// get returns the slot's connection, dialing a new one first if it is
// missing or alive says it is done.
func (s *slot[C]) get(ctx context.Context, alive func(C) bool, dial func(context.Context) (C, error), dials *atomic.Int64) (C, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ok && alive(s.conn) {
		return s.conn, nil
	}
	c, err := dial(ctx)
	if err != nil {
		var zero C
		return zero, err
	}
	s.conn, s.ok = c, true
	dials.Add(1)
	return c, nil
}

// h2 is HTTP/2 on net/http's client connections: Conns connections of its
// own, each with Streams workers.
type h2 struct {
	u       *url.URL
	o       HTTPOptions
	slots   []slot[*http.ClientConn]
	streams int
	dial    func(context.Context) (*http.ClientConn, error)
	dials   atomic.Int64
}

func newH2(ctx context.Context, u *url.URL, addr string, o HTTPOptions, tlsConf *tls.Config, dial func(context.Context, string, string) (net.Conn, error)) (*h2, error) {
	t := &http.Transport{
		DialContext: dial,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(conn, withALPN(tlsConf, "h2"))
			if err = tc.HandshakeContext(ctx); err == nil && tc.ConnectionState().NegotiatedProtocol != "h2" {
				err = fmt.Errorf("load: %s did not negotiate h2 (ALPN %q)", addr, tc.ConnectionState().NegotiatedProtocol)
			}
			if err != nil {
				conn.Close()
				return nil, err
			}
			return tc, nil
		},
		Protocols: new(http.Protocols),
	}
	if u.Scheme == "http" {
		t.Protocols.SetUnencryptedHTTP2(true) // prior knowledge
	} else {
		t.Protocols.SetHTTP2(true)
	}
	c := &h2{u: u, o: o, streams: o.Streams, slots: make([]slot[*http.ClientConn], o.Conns)}
	c.dial = func(ctx context.Context) (*http.ClientConn, error) {
		dctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		return t.NewClientConn(dctx, u.Scheme, addr)
	}
	for i := range c.slots {
		if _, err := c.slots[i].get(ctx, h2alive, c.dial, &c.dials); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

func h2alive(cc *http.ClientConn) bool { return cc.Err() == nil }

func withALPN(c *tls.Config, proto string) *tls.Config {
	c = c.Clone()
	c.NextProtos = []string{proto}
	return c
}

func (c *h2) workers() int { return len(c.slots) * c.streams }

func (c *h2) do(ctx context.Context, w int) error {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	cc, err := c.slots[w%len(c.slots)].get(ctx, h2alive, c.dial, &c.dials)
	if err != nil {
		return err
	}
	req, err := stdRequest(ctx, c.u, c.o)
	if err != nil {
		return err
	}
	return finish(cc.RoundTrip(req))
}

func (c *h2) redials() int { return int(c.dials.Load()) - len(c.slots) }

func (c *h2) close() {
	for i := range c.slots {
		if c.slots[i].ok {
			c.slots[i].conn.Close()
		}
	}
}

// h3 is HTTP/3 on quic-go: Conns QUIC connections, each on its own UDP
// socket bound to LocalAddr, each with Streams workers.
type h3 struct {
	u       *url.URL
	o       HTTPOptions
	slots   []slot[*h3conn]
	streams int
	dial    func(context.Context) (*h3conn, error)
	dials   atomic.Int64
}

type h3conn struct {
	udp *net.UDPConn
	qt  *quic.Transport
	cc  *http3.ClientConn
}

func (c *h3conn) close() {
	c.cc.CloseWithError(0, "")
	c.qt.Close()
	c.udp.Close()
}

func h3alive(c *h3conn) bool {
	if c.cc.Context().Err() != nil {
		c.close()
		return false
	}
	return true
}

func newH3(ctx context.Context, addr string, o HTTPOptions, tlsConf *tls.Config) (*h3, error) {
	u, _ := url.Parse(o.URL)
	c := &h3{u: u, o: o, streams: o.Streams, slots: make([]slot[*h3conn], o.Conns)}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	if o.LocalAddr != "" && net.ParseIP(o.LocalAddr) == nil {
		return nil, fmt.Errorf("load: local address %q is not an IP", o.LocalAddr)
	}
	listen := o.ListenPacket
	if listen == nil {
		listen = new(net.ListenConfig).ListenPacket
	}
	laddr := net.JoinHostPort(o.LocalAddr, "0")
	tr := &http3.Transport{}
	qconf := &quic.Config{MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: 10 * time.Second}
	c.dial = func(ctx context.Context) (*h3conn, error) {
		pc, err := listen(ctx, "udp", laddr)
		if err != nil {
			return nil, err
		}
		udp := pc.(*net.UDPConn)
		qt := &quic.Transport{Conn: udp}
		dctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		qc, err := qt.Dial(dctx, raddr, withALPN(tlsConf, http3.NextProtoH3), qconf)
		if err != nil {
			qt.Close()
			udp.Close()
			return nil, err
		}
		return &h3conn{udp: udp, qt: qt, cc: tr.NewClientConn(qc)}, nil
	}
	for i := range c.slots {
		if _, err := c.slots[i].get(ctx, h3alive, c.dial, &c.dials); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

func (c *h3) workers() int { return len(c.slots) * c.streams }

func (c *h3) do(ctx context.Context, w int) error {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	hc, err := c.slots[w%len(c.slots)].get(ctx, h3alive, c.dial, &c.dials)
	if err != nil {
		return err
	}
	req, err := stdRequest(ctx, c.u, c.o)
	if err != nil {
		return err
	}
	return finish(hc.cc.RoundTrip(req))
}

func (c *h3) redials() int { return int(c.dials.Load()) - len(c.slots) }

func (c *h3) close() {
	for i := range c.slots {
		if c.slots[i].ok {
			c.slots[i].conn.close()
		}
	}
}

// dialer returns a TCP dial function that binds to localAddr (if set).
func dialer(localAddr string) (func(context.Context, string, string) (net.Conn, error), error) {
	d := &net.Dialer{}
	if localAddr != "" {
		ip := net.ParseIP(localAddr)
		if ip == nil {
			return nil, fmt.Errorf("load: local address %q is not an IP", localAddr)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d.DialContext, nil
}
