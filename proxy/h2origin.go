package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

//lint:file-ignore SA1019 the origins' HTTP/2 stays on x/net/http2's Transport for now: refusedStream tells a stream the origin refused (safe to retry elsewhere) by x/net/http2's StreamError, which net/http's bundled HTTP/2 does not return.

// An https origin that offers h2 in ALPN is spoken to over HTTP/2: one
// connection carries every concurrent request (x/net/http2's Transport
// keeps the connections), which is the best reuse there is. Others stay
// on the HTTP/1.1 pool. The first request to an https origin learns which
// by a handshake of its own; the answer holds for the pool's life.

const (
	protoUnknown int32 = iota
	protoH1
	protoH2
)

// h2Origin is an origin's HTTP/2 side.
type h2Origin struct {
	proto atomic.Int32
	once  sync.Mutex // one probe at a time
	tr    *http2.Transport
}

// setupH2 prepares the HTTP/2 transport of an https origin.
func (op *originPools) setupH2(o *origin) {
	tc := o.hc.TLSConfig.Clone()
	tc.NextProtos = []string{"h2"}
	o.h2.tr = &http2.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			c, err := op.dialTLS(ctx, addr, tc, op.t.Load().connect)
			if err != nil {
				return nil, err
			}
			o.connects.Add(1)
			return c, nil
		},
		ReadIdleTimeout: 30 * time.Second, // ping a silent connection
		PingTimeout:     15 * time.Second,
		IdleConnTimeout: 60 * time.Second,
	}
}

// dialTLS dials addr and shakes hands.
func (op *originPools) dialTLS(ctx context.Context, addr string, tc *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	c, err := op.dial(ctx, addr, timeout)
	if err != nil {
		return nil, err
	}
	tlsc := tls.Client(c, tc)
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := tlsc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, err
	}
	return tlsc, nil
}

// speaksH2 reports whether requests to o go over HTTP/2, learning it on
// the first call for an https origin.
func (op *originPools) speaksH2(o *origin) bool {
	switch o.h2.proto.Load() {
	case protoH1:
		return false
	case protoH2:
		return true
	}
	if o.h2.tr == nil {
		o.h2.proto.Store(protoH1)
		return false
	}
	o.h2.once.Lock()
	defer o.h2.once.Unlock()
	if p := o.h2.proto.Load(); p != protoUnknown {
		return p == protoH2
	}
	tc := o.hc.TLSConfig.Clone()
	tc.NextProtos = []string{"h2", "http/1.1"}
	c, err := op.dialTLS(context.Background(), o.hc.Addr, tc, op.t.Load().connect)
	if err != nil {
		return false // unknown still: HTTP/1.1 this time, ask again next time
	}
	c.Close()
	if c.ConnectionState().NegotiatedProtocol == "h2" {
		o.h2.proto.Store(protoH2)
		return true
	}
	o.h2.proto.Store(protoH1)
	return false
}

// doH2 sends a fasthttp request to o over HTTP/2 and fills resp, whose
// body streams from the origin.
// A client that goes away (ctx ends; nil: none that can) resets the
// origin's stream, not its connection.
func (op *originPools) doH2(parent context.Context, o *origin, req *fasthttp.Request, resp *fasthttp.Response) error {
	u, err := url.Parse("https://" + o.hc.Addr + string(req.Header.RequestURI()))
	if err != nil {
		return err
	}
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithCancel(parent)
	hr := &http.Request{
		Method: string(req.Header.Method()), URL: u, Host: string(req.Header.Host()),
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: http.Header{},
	}
	hr = hr.WithContext(ctx)
	for k, v := range req.Header.All() {
		switch {
		case bytes.EqualFold(k, []byte("Host")), bytes.EqualFold(k, []byte("Content-Length")):
			continue
		}
		hr.Header.Add(string(k), string(v))
	}
	if hasBody(&req.Header) {
		hr.ContentLength = int64(req.Header.ContentLength()) // -1: unknown
		if bs := req.BodyStream(); bs != nil {
			hr.Body = io.NopCloser(bs)
		} else {
			hr.Body = io.NopCloser(bytes.NewReader(req.Body()))
		}
	}
	// The upstream timeout bounds the wait for the response head.
	timer := time.AfterFunc(op.t.Load().read, cancel)
	hresp, err := o.h2.tr.RoundTrip(hr)
	if !timer.Stop() && err != nil {
		cancel()
		return errH2Timeout
	}
	if err != nil {
		cancel()
		return err
	}
	resp.SetStatusCode(hresp.StatusCode)
	for k, vs := range hresp.Header {
		for _, v := range vs {
			resp.Header.Add(k, v)
		}
	}
	resp.SetBodyStream(&h2Body{ReadCloser: hresp.Body, cancel: cancel}, int(hresp.ContentLength))
	return nil
}

var errH2Timeout = &timeoutError{"the origin did not answer in time (HTTP/2)"}

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// h2Body ends the request's context with its body.
type h2Body struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *h2Body) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// refusedStream reports an HTTP/2 stream the origin refused: it did not
// process it, so any request may go elsewhere.
func refusedStream(err error) bool {
	var se http2.StreamError
	return errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream
}
