package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/proxy/cdnconf"
)

// OriginTLS is how the proxy speaks TLS to https origins
// (cdnconf.OriginTLS).
type OriginTLS = cdnconf.OriginTLS

// origin is an origin server with its keep-alive connection pool and its
// health. There is one per origin URL (and TLS settings) for the whole
// process, shared by every site, route and protocol that forwards to it,
// kept across reloads.
type origin struct {
	url    *url.URL
	name   string // scheme://host:port, for logs and metrics
	scheme []byte // what the request URI must carry for hc
	hc     *fasthttp.HostClient
	health originHealth

	active   atomic.Int64  // requests in flight
	requests atomic.Uint64 // attempts sent
	connects atomic.Uint64 // connections opened
	failures atomic.Uint64 // connection failures and timeouts

	checker *checker // the active health check, nil without one
	h2      h2Origin // HTTP/2 to https origins that offer it
}

// upstreamTimeouts bound the work with an origin.
type upstreamTimeouts struct {
	connect time.Duration // dial
	read    time.Duration // each read: the response head, then every gap in the body
	write   time.Duration // each write of the request
}

// setTimeouts sets the upstream timeouts from l: new dials and every
// later read and write of an origin connection take them.
func (op *originPools) setTimeouts(l *Limits) {
	op.t.Store(&upstreamTimeouts{connect: l.UpstreamConnectTimeout, read: l.UpstreamTimeout, write: l.UpstreamTimeout})
}

// timeouts returns the upstream timeouts in force (none before the
// first setTimeouts).
func (op *originPools) timeouts() *upstreamTimeouts {
	if t := op.t.Load(); t != nil {
		return t
	}
	return &upstreamTimeouts{}
}

// originPools keeps the shared pools.
type originPools struct {
	dialWith func(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) // Options.Dial; nil: d.DialContext
	fds      *fdlimit.Budget                                                                     // a dial takes a descriptor in class fdlimit.Dial
	log      *slog.Logger

	mu    sync.Mutex // guards pools
	pools map[string]*origin
	t     atomic.Pointer[upstreamTimeouts] // setTimeouts swaps it: each dial and read takes those in force

	checkMu sync.Mutex // guards every origin's checker

	exchanges exchanges // requests in flight whose clients may go away
}

// maxConnAge recycles origin connections, so that an origin whose DNS name
// moves is followed within this time even under steady load.
const maxConnAge = 5 * time.Minute

// get returns the pool of u with the TLS settings ot, creating it.
func (op *originPools) get(u *url.URL, ot OriginTLS) (*origin, error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	key := cdnconf.OriginKey(u)
	if ot != (OriginTLS{}) && u.Scheme == "https" {
		var opts []string
		if ot.InsecureSkipVerify {
			opts = append(opts, "insecure_skip_verify")
		}
		if ot.CAFile != "" {
			opts = append(opts, "ca_file="+ot.CAFile)
		}
		if ot.ServerName != "" {
			opts = append(opts, "server_name="+ot.ServerName)
		}
		key += " (" + strings.Join(opts, ", ") + ")"
	}
	if o := op.pools[key]; o != nil {
		return o, nil
	}
	isTLS := u.Scheme == "https"
	tc := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12, InsecureSkipVerify: ot.InsecureSkipVerify}
	if ot.ServerName != "" {
		tc.ServerName = ot.ServerName
	}
	if ot.CAFile != "" {
		pool, err := cdnconf.LoadCAFile(ot.CAFile)
		if err != nil {
			return nil, fmt.Errorf("origin_tls.ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	o := &origin{url: u, name: key, scheme: []byte(u.Scheme)}
	o.hc = &fasthttp.HostClient{
		Addr:      cdnconf.HostPort(u),
		IsTLS:     isTLS,
		TLSConfig: tc,
		// The name is resolved at every new connection: a DNS change is
		// followed as connections are replaced (maxConnAge at the latest).
		Dial: func(addr string) (net.Conn, error) {
			c, err := op.dial(context.Background(), addr, op.t.Load().connect)
			if err != nil {
				return nil, err
			}
			o.connects.Add(1)
			ic := &idleConn{Conn: c, t: &op.t, xs: &op.exchanges, headNext: true}
			if isTLS {
				// TLS under idleConn, not over it (fasthttp takes a
				// connection with a Handshake method as TLS already):
				// the exchange binding reads the request's head in the
				// clear.
				tlsc := tls.Client(c, tc)
				ic.Conn = tlsc
				return &tlsIdleConn{ic, tlsc}, nil
			}
			return ic, nil
		},
		Transport:                     originTransport{},
		MaxConns:                      4096,
		MaxIdleConnDuration:           60 * time.Second,
		MaxConnDuration:               maxConnAge,
		MaxConnWaitTimeout:            op.timeouts().connect, // fixed for the pool's life
		StreamResponseBody:            true,                  // originTransport: large and unknown lengths only
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		NoDefaultUserAgentHeader:      true,
		// One attempt: forward retries, on another origin, within the
		// site's budget.
		MaxIdemponentCallAttempts: 1,
	}
	if isTLS {
		op.setupH2(o)
	}
	op.pools[key] = o
	return o, nil
}

// smallBody is the largest origin body read whole with its head: the
// client then gets head and body in one write, and the request takes none
// of the streaming path. Larger bodies and bodies of unknown length
// stream (a slow or endless one reaches the client as it comes).
const smallBody = 64 << 10

// originTransport is the round trip of the origin pools: fasthttp's own
// (HostClient.Transport), except that a response whose body has a known
// length of at most smallBody is read whole, and only the others stream.
// The pools set no ReadTimeout or WriteTimeout: idleConn bounds each read
// and write.
type originTransport struct{}

// maxInterim bounds the informational (1xx) responses before the final
// one, as fasthttp does.
const maxInterim = 100

var errTooManyInterim = errors.New("more than 100 informational responses from the origin")

func (originTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	cc, err := hc.AcquireConn(0, req.ConnectionClose())
	if err != nil {
		return false, err
	}
	conn := cc.Conn() // not resp.ParseNetConn: nothing asks an origin's answer for its addresses

	// Past its age, the connection carries one more request and closes.
	reset := false
	if hc.MaxConnDuration > 0 && !req.ConnectionClose() && coarseNow().Sub(cc.CreatedTime()) > hc.MaxConnDuration {
		req.SetConnectionClose()
		reset = true
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if reset {
		req.Header.ResetConnectionClose()
	}
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		if t, ok := err.(interface{ Timeout() bool }); ok && t.Timeout() {
			err = fasthttp.ErrTimeout
		}
		hc.CloseConn(cc)
		return true, err
	}

	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	if hc.DisableHeaderNamesNormalizing {
		resp.Header.DisableNormalizing()
	}
	br := hc.AcquireReader(conn)
	fail := func(err error) (bool, error) {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return true, err
	}
	if err := resp.Header.Read(br); err != nil {
		return fail(err)
	}
	for n := 0; ; n++ {
		code := resp.StatusCode()
		if code < 100 || code > 199 || code == fasthttp.StatusSwitchingProtocols {
			break
		}
		if n >= maxInterim {
			return fail(errTooManyInterim)
		}
		if err := resp.Header.Read(br); err != nil {
			return fail(err)
		}
	}
	code := resp.StatusCode()
	noBody := resp.SkipBody || code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified || code == fasthttp.StatusSwitchingProtocols
	closeConn := reset || req.ConnectionClose() || resp.ConnectionClose()
	if cl := resp.Header.ContentLength(); !noBody && (cl < 0 || cl > smallBody) {
		// Streamed: a response of its own reads the body from the
		// connection, which goes back to the pool when the stream is
		// closed, read to its end.
		s := fasthttp.AcquireResponse()
		resp.Header.CopyTo(&s.Header)
		s.StreamBody = true
		if err := s.ReadBody(br, 0); err != nil {
			fasthttp.ReleaseResponse(s)
			return fail(err)
		}
		release := func(discard bool) {
			hc.ReleaseReader(br)
			if discard || closeConn || resp.ConnectionClose() {
				hc.CloseConn(cc)
			} else {
				hc.ReleaseConn(cc)
			}
		}
		resp.SetBodyStream(&originStream{body: s.BodyStream(), s: s, conn: conn, release: release}, cl)
		return false, nil
	}
	if !noBody {
		resp.StreamBody = false
		if err := resp.ReadBody(br, 0); err != nil {
			return fail(err)
		}
	}
	hc.ReleaseReader(br)
	if closeConn {
		hc.CloseConn(cc)
	} else {
		hc.ReleaseConn(cc)
	}
	return false, nil
}

// originStream is a streamed origin body. Closing it (fasthttp does, once
// the response is written or abandoned) gives the connection back to the
// pool when the body was read to its end, and closes it otherwise; a read
// in flight is cut first.
type originStream struct {
	body    io.Reader          // s's stream
	s       *fasthttp.Response // holds the stream and its framing
	conn    net.Conn
	release func(discard bool) // the reader and the connection, back to the pool or closed

	mu     sync.Mutex // held by a read in flight
	closed atomic.Bool
	eof    bool
	once   sync.Once
}

func (o *originStream) Read(p []byte) (int, error) {
	if o.closed.Load() {
		return 0, io.ErrClosedPipe
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed.Load() {
		return 0, io.ErrClosedPipe
	}
	n, err := o.body.Read(p)
	if err == io.EOF {
		o.eof = true
	}
	return n, err
}

// CloseWithError ends the stream (fasthttp.ReadCloserWithError).
func (o *originStream) CloseWithError(err error) error {
	o.once.Do(func() {
		o.closed.Store(true)
		locked := o.mu.TryLock()
		discard := err != nil || !locked || !o.eof
		if discard {
			o.conn.Close() // cuts a read in flight
		}
		if !locked {
			o.mu.Lock()
		}
		defer o.mu.Unlock()
		o.s.CloseBodyStream()
		fasthttp.ReleaseResponse(o.s)
		o.release(discard)
	})
	return nil
}

// dial connects to addr (Options.Dial); a failure is a dialError (nothing
// was sent). The connection's descriptor comes from the budget and goes
// back when it closes; a refusal (or EMFILE) is a local shortage
// (fdlimit.Exhausted), which originFault does not blame on the origin. Its
// deadlines are lazy (lazyConn).
func (op *originPools) dial(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	if !op.fds.Acquire(fdlimit.Dial, 1) {
		return nil, &dialError{fdlimit.ErrExhausted}
	}
	d := &net.Dialer{Timeout: timeout}
	var c net.Conn
	var err error
	if op.dialWith != nil {
		c, err = op.dialWith(ctx, d, "tcp", addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		op.fds.Release(fdlimit.Dial, 1)
		return nil, &dialError{err}
	}
	tc := c.(*net.TCPConn)
	return newLazyConn(op.fds.Track(tc, fdlimit.Dial), tc), nil
}

// localShortage reports whether err is the proxy's own want of descriptors
// (the budget, EMFILE, ENFILE): never an origin's fault.
func localShortage(err error) bool { return fdlimit.Exhausted(err) }

// all returns every pool, for metrics and the admin API.
func (op *originPools) all() []*origin {
	op.mu.Lock()
	defer op.mu.Unlock()
	out := make([]*origin, 0, len(op.pools))
	for _, o := range op.pools {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b *origin) int { return strings.Compare(a.name, b.name) })
	return out
}

// idleConn bounds each read and each write of an upstream connection, so
// that a slow origin is cut after a gap rather than after a total that a
// long download would exceed.
//
// It also binds itself to the exchange whose request it carries (see
// exchange), so that a request whose client went away is cut alone.
type idleConn struct {
	net.Conn
	t *atomic.Pointer[upstreamTimeouts] // the pools': those in force

	xs       *exchanges
	headNext bool   // the next write is (part of) a request head
	inHead   bool   // a head's first write is done
	carry    []byte // the tail of the head's last write, while looking for the id
	aborted  atomic.Bool
	mu       sync.Mutex // serializes owner changes with abort
	owner    atomic.Pointer[exchange]
}

// tlsIdleConn is an idleConn over TLS.
type tlsIdleConn struct {
	*idleConn
	tc *tls.Conn
}

func (c *tlsIdleConn) Handshake() error                     { return c.tc.Handshake() }
func (c *tlsIdleConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

func (c *idleConn) Read(p []byte) (int, error) {
	c.headNext = true // fasthttp writes a request in full before it reads
	pushDeadline(c.t.Load().read, c.Conn.SetReadDeadline)
	// After the push: an abort that came before it would be undone by it.
	if c.aborted.Load() {
		return 0, errAborted
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if c.headNext {
		if !c.inHead {
			c.claim()
			c.inHead = true
		}
		over, err := c.bindHead(p)
		if err != nil {
			return 0, err
		}
		if over {
			c.headNext, c.inHead = false, false
		}
	}
	pushDeadline(c.t.Load().write, c.Conn.SetWriteDeadline)
	if c.aborted.Load() {
		return 0, errAborted
	}
	return c.Conn.Write(p)
}

// errorStatus is the status and sentence of the page for a failed
// forward.
func errorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return 413, "the request body is larger than the limit"
	case errors.Is(err, errClientBody):
		return 400, "the request body could not be read"
	case errors.Is(err, errNoHealthyOrigin):
		return 503, "no origin of this site is up"
	case errors.Is(err, errClientGone):
		return 499, "the client went away" // nginx's code; nobody reads the page
	case fdlimit.Exhausted(err):
		return 503, "the proxy is out of connections"
	}
	return upstreamStatus(err), "the origin did not answer"
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
