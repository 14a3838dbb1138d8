package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Fixture is a proxy whose HTTP/2 server is reached over in-memory
// connections (no kernel), with an in-memory fasthttp origin.
type h2Fixture struct {
	p      *Proxy
	reg    *prometheus.Registry
	ln     *fasthttputil.InmemoryListener // the proxy's
	origin *fasthttputil.InmemoryListener
	conns  chan *countingConn // the server side of each connection, as accepted
}

// countingConn counts the writes the server makes.
type countingConn struct {
	net.Conn
	writes, bytes atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	c.bytes.Add(int64(len(b)))
	return c.Conn.Write(b)
}

func newH2Fixture(t testing.TB, lim Limits, origin fasthttp.RequestHandler) *h2Fixture {
	t.Helper()
	f := &h2Fixture{reg: prometheus.NewRegistry(), ln: fasthttputil.NewInmemoryListener(), origin: fasthttputil.NewInmemoryListener(), conns: make(chan *countingConn, 1024)}
	osrv := &fasthttp.Server{Handler: origin, StreamRequestBody: true, MaxRequestBodySize: 1 << 30, DisableHeaderNamesNormalizing: true, Logger: nopLogger{}}
	go osrv.Serve(f.origin)
	u, _ := url.Parse("http://origin.test")
	p, err := New(Options{Limits: lim, Registerer: f.reg, Config: Config{HTTPSPorts: []uint16{443}, Sites: []Site{{Hosts: []string{"*"}, Origins: []Origin{{URL: u}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	f.p = p
	o, _ := p.pools.get(u, OriginTLS{})
	o.hc.Dial = func(string) (net.Conn, error) { return f.origin.Dial() }
	go func() {
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			cc := &countingConn{Conn: c}
			select {
			case f.conns <- cc:
			default:
			}
			go p.serveH2(cc)
		}
	}()
	t.Cleanup(func() {
		f.ln.Close()
		for _, hc := range p.h2conns.all() {
			hc.fail(errH2ConnClosed)
		}
		p.tcp.Close()
		f.origin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		osrv.ShutdownWithContext(ctx)
	})
	return f
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

func (f *h2Fixture) client() *http.Client {
	tr := &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return f.ln.Dial()
		},
		Protocols: new(http.Protocols),
	}
	tr.Protocols.SetUnencryptedHTTP2(true) // prior knowledge
	return &http.Client{Timeout: 20 * time.Second, Transport: tr}
}

// echoOrigin answers "METHOD TARGET len=N " and the request body; with a
// query n=SIZE it answers SIZE bytes instead, with s=1 streamed (chunked).
func echoOrigin(ctx *fasthttp.RequestCtx) {
	body, _ := readBody(ctx)
	if n, err := strconv.Atoi(string(ctx.QueryArgs().Peek("n"))); err == nil {
		b := patterned(n)
		if string(ctx.QueryArgs().Peek("s")) == "1" {
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				for len(b) > 0 {
					k := min(len(b), 10000)
					w.Write(b[:k])
					w.Flush()
					b = b[k:]
				}
			})
			return
		}
		ctx.SetBody(b)
		return
	}
	if string(ctx.Path()) == "/echo" {
		ctx.SetBody(body)
		return
	}
	fmt.Fprintf(ctx, "%s %s len=%d ", ctx.Method(), ctx.RequestURI(), len(body))
	ctx.Response.Header.Set("X-Origin-Cookie", string(ctx.Request.Header.Peek("Cookie")))
}

// readBody reads an origin request's body, streamed or not.
func readBody(ctx *fasthttp.RequestCtx) ([]byte, error) {
	if bs := ctx.RequestBodyStream(); bs != nil {
		return io.ReadAll(bs)
	}
	return ctx.Request.Body(), nil
}

func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%23)
	}
	return b
}

// rawH2 is a client of hand-made frames.
type rawH2 struct {
	t   testing.TB
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
	dec *hpack.Decoder
	hdr map[uint32][]hpack.HeaderField
	cur uint32
	wmu sync.Mutex // the framer's writes, and the encoder
	// inBlock: a header block is open, so no frame but its
	// CONTINUATIONs may go (next holds its SETTINGS acks back).
	inBlock atomic.Bool
}

// w runs fn, which writes frames, alone.
func (r *rawH2) w(fn func() error) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return fn()
}

func (f *h2Fixture) raw(t testing.TB, settings ...http2.Setting) *rawH2 {
	t.Helper()
	c, err := f.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawH2{t: t, c: c, fr: http2.NewFramer(c, c), hdr: map[uint32][]hpack.HeaderField{}}
	r.fr.AllowIllegalWrites = true // hostile clients do
	r.enc = hpack.NewEncoder(&r.hb)
	r.dec = hpack.NewDecoder(4096, func(hf hpack.HeaderField) { r.hdr[r.cur] = append(r.hdr[r.cur], hf) })
	io.WriteString(c, http2.ClientPreface)
	if err := r.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rawH2) block(fields ...string) []byte {
	r.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(r.hb.Bytes())
}

func get(path string, extra ...string) []string {
	return append([]string{":method", "GET", ":scheme", "https", ":authority", "a.example", ":path", path}, extra...)
}

func (r *rawH2) headers(id uint32, end bool, fields ...string) {
	r.t.Helper()
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.headersLocked(id, end, fields...)
}

// headersLocked is headers inside w.
func (r *rawH2) headersLocked(id uint32, end bool, fields ...string) {
	r.t.Helper()
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block(fields...), EndStream: end, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// next reads the next frame, within d; it answers SETTINGS and decodes
// HEADERS into r.hdr.
func (r *rawH2) next(d time.Duration) (http2.Frame, error) {
	r.c.SetReadDeadline(time.Now().Add(d))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && !r.inBlock.Load() && r.wmu.TryLock() { // a flooding writer may hold it (and block)
				if !r.inBlock.Load() {
					r.fr.WriteSettingsAck()
				}
				r.wmu.Unlock()
			}
			continue
		case *http2.HeadersFrame:
			r.cur = f.StreamID
			r.dec.Write(f.HeaderBlockFragment())
		case *http2.ContinuationFrame:
			r.dec.Write(f.HeaderBlockFragment())
		}
		return f, nil
	}
}

func (r *rawH2) status(id uint32) string {
	for _, hf := range r.hdr[id] {
		if hf.Name == ":status" {
			return hf.Value
		}
	}
	return ""
}

// response reads until stream id ends: its status and body, or the
// RST_STREAM or GOAWAY code that ended it (as "RST PROTOCOL_ERROR").
func (r *rawH2) response(id uint32) (status, body string) {
	r.t.Helper()
	var b strings.Builder
	for {
		f, err := r.next(5 * time.Second)
		if err != nil {
			return "error " + err.Error(), b.String()
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			if f.StreamID == id && f.StreamEnded() {
				return r.status(id), b.String()
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				b.Write(f.Data())
				if n := uint32(len(f.Data())); n > 0 {
					r.w(func() error { r.fr.WriteWindowUpdate(0, n); return r.fr.WriteWindowUpdate(id, n) })
				}
				if f.StreamEnded() {
					return r.status(id), b.String()
				}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "RST " + f.ErrCode.String(), b.String()
			}
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String(), b.String()
		}
	}
}

// goAway reads until GOAWAY or the end of the connection.
func (r *rawH2) goAway(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		f, err := r.next(time.Until(deadline))
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				return "still open"
			}
			if testing.Verbose() {
				r.t.Logf("connection ended: %v", err)
			}
			return "closed"
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return ga.ErrCode.String()
		}
	}
}

// TestH2Bodies: many concurrent streams over one connection with request
// and response bodies of every size around the frame, window and
// small-body boundaries, known and unknown length, arrive whole both ways.
func TestH2Bodies(t *testing.T) {
	f := newH2Fixture(t, Limits{}, echoOrigin)
	c := f.client()
	sizes := []int{0, 1, 16383, 16384, 16385, 65535, 65536, 65537, 200000, 1 << 20}
	var wg sync.WaitGroup
	errs := make(chan error, 4*len(sizes))
	for _, n := range sizes {
		for _, known := range []bool{true, false} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := patterned(n)
				var rd io.Reader = bytes.NewReader(body)
				if !known {
					rd = io.MultiReader(rd) // no length: sent without Content-Length
				}
				req, _ := http.NewRequest("POST", "http://a.example/echo", rd)
				if !known {
					req.ContentLength = -1
				}
				resp, err := c.Do(req)
				if err != nil {
					errs <- fmt.Errorf("upload %d (known %v): %v", n, known, err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || sha256.Sum256(got) != sha256.Sum256(body) {
					errs <- fmt.Errorf("upload %d (known %v): %d, %d bytes back (%v)", n, known, resp.StatusCode, len(got), err)
				}
			}()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := "0"
				if !known {
					s = "1"
				}
				resp, err := c.Get(fmt.Sprintf("http://a.example/dl?n=%d&s=%s", n, s))
				if err != nil {
					errs <- fmt.Errorf("download %d (streamed %v): %v", n, !known, err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, patterned(n)) {
					errs <- fmt.Errorf("download %d (streamed %v): %d, %d bytes (%v)", n, !known, resp.StatusCode, len(got), err)
				}
				if known && resp.ContentLength != int64(n) {
					errs <- fmt.Errorf("download %d: Content-Length %d", n, resp.ContentLength)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitStreams(t, f.p)
}

// TestH2TinyWindow: a client whose stream window is 1 byte, and that
// gives the window back 700 bytes at a time, still gets the whole body.
func TestH2TinyWindow(t *testing.T) {
	f := newH2Fixture(t, Limits{}, echoOrigin)
	r := f.raw(t, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	r.headers(1, true, get("/dl?n=50000")...)
	var got bytes.Buffer
	frames := 0
	for {
		fr, err := r.next(5 * time.Second)
		if err != nil {
			for _, hc := range f.p.h2conns.all() {
				hc.mu.Lock()
				for _, s := range hc.streams {
					t.Logf("stream %d sendWin %d; conn window %d, pending %d, flushing %v", s.id, s.sendWin, hc.sendConn, len(hc.wbuf), hc.flushing)
				}
				hc.mu.Unlock()
			}
			t.Fatalf("after %d bytes: %v", got.Len(), err)
		}
		if d, ok := fr.(*http2.DataFrame); ok {
			got.Write(d.Data())
			frames++
			if d.StreamEnded() {
				break
			}
			if len(d.Data()) > 0 {
				r.fr.WriteWindowUpdate(1, 700)
			}
		}
		if rs, ok := fr.(*http2.RSTStreamFrame); ok {
			t.Fatalf("reset %v after %d bytes", rs.ErrCode, got.Len())
		}
	}
	if !bytes.Equal(got.Bytes(), patterned(50000)) {
		t.Fatalf("%d bytes, want the 50000 sent", got.Len())
	}
	t.Logf("50000 bytes in %d DATA frames through a 1-byte window", frames)
}

// TestH2ClosedWindowCut: a client that never opens its window is cut
// after the send timeout.
func TestH2ClosedWindowCut(t *testing.T) {
	f := newH2Fixture(t, Limits{SendTimeout: 300 * time.Millisecond}, echoOrigin)
	r := f.raw(t, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	start := time.Now()
	r.headers(1, true, get("/dl?n=100000")...)
	for {
		_, err := r.next(5 * time.Second)
		if err != nil {
			if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
				t.Errorf("cut after %v, want about the 300 ms send timeout", d)
			}
			return
		}
	}
}

// TestH2Trailers: trailers from the client are decoded, checked and
// dropped: the request with its body reaches the origin, the trailer
// does not; trailers with a pseudo-header or without END_STREAM reset
// the stream.
func TestH2Trailers(t *testing.T) {
	var sawTrailer atomic.Bool
	f := newH2Fixture(t, Limits{}, func(ctx *fasthttp.RequestCtx) {
		body, _ := readBody(ctx)
		if len(ctx.Request.Header.Peek("X-Trailer")) > 0 {
			sawTrailer.Store(true)
		}
		fmt.Fprintf(ctx, "len=%d", len(body))
	})
	r := f.raw(t)
	post := []string{":method", "POST", ":scheme", "https", ":authority", "a.example", ":path", "/t"}
	r.headers(1, false, post...)
	r.fr.WriteData(1, false, []byte("hello"))
	r.headers(1, true, "x-trailer", "v")
	if st, body := r.response(1); st != "200" || body != "len=5" {
		t.Errorf("request with trailers: %s %q", st, body)
	}
	if sawTrailer.Load() {
		t.Error("the origin saw the client's trailer")
	}
	r.headers(3, false, post...)
	r.fr.WriteData(3, false, []byte("x"))
	r.headers(3, true, ":path", "/x")
	if st, _ := r.response(3); st != "RST PROTOCOL_ERROR" {
		t.Errorf("trailers with a pseudo-header: %s", st)
	}
	r.headers(5, false, post...)
	r.headers(5, false, "x-trailer", "v")
	if st, _ := r.response(5); st != "RST PROTOCOL_ERROR" {
		t.Errorf("trailers without END_STREAM: %s", st)
	}
}

// TestH2Malformed: malformed requests (RFC 9113 8.1.1) are stream errors,
// never forwarded; the edge's refusals get its page; the connection
// serves on.
func TestH2Malformed(t *testing.T) {
	var reached atomic.Int64
	f := newH2Fixture(t, Limits{MaxHeaderBytes: 4096}, func(ctx *fasthttp.RequestCtx) {
		reached.Add(1)
		readBody(ctx)
		ctx.WriteString("ok")
	})
	r := f.raw(t)
	id := uint32(1)
	for _, tc := range []struct {
		name   string
		fields []string
		want   string
	}{
		{"upper-case name", get("/", "X-Up", "v"), "RST PROTOCOL_ERROR"},
		{"connection header", get("/", "connection", "close"), "RST PROTOCOL_ERROR"},
		{"TE gzip", get("/", "te", "gzip"), "RST PROTOCOL_ERROR"},
		{"unknown pseudo", get("/", ":foo", "x"), "RST PROTOCOL_ERROR"},
		{"response pseudo", append([]string{":status", "200"}, get("/")...), "RST PROTOCOL_ERROR"},
		{"repeated :path", get("/", ":path", "/b"), "RST PROTOCOL_ERROR"},
		{"no :scheme", []string{":method", "GET", ":authority", "a.example", ":path", "/"}, "RST PROTOCOL_ERROR"},
		{"empty :path", []string{":method", "GET", ":scheme", "https", ":authority", "a.example", ":path", ""}, "RST PROTOCOL_ERROR"},
		{"Host differs from :authority", get("/", "host", "b.example"), "RST PROTOCOL_ERROR"},
		{"authority with userinfo", []string{":method", "GET", ":scheme", "https", ":authority", "u:p@a.example", ":path", "/"}, "RST PROTOCOL_ERROR"},
		{"header value with outer space", get("/", "x-a", " v"), "400"},
		{"header name not a token", get("/", "x a", "v"), "400"},
		{"method not a token", []string{":method", "G T", ":scheme", "https", ":authority", "a.example", ":path", "/"}, "400"},
		{"path with a dot segment", get("/a/../b"), "400"},
		{"CONNECT", []string{":method", "CONNECT", ":authority", "a.example:443"}, "405"},
		{"header list over max_header_bytes", get("/", "x-big", strings.Repeat("b", 5000)), "431"},
		{"no host at all", []string{":method", "GET", ":scheme", "https", ":path", "/"}, "RST PROTOCOL_ERROR"},
	} {
		r.headers(id, true, tc.fields...)
		st, body := r.response(id)
		if st != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, st, tc.want)
		}
		if st[0] == '4' && !strings.Contains(body, "request id: ") {
			t.Errorf("%s: %q, not the edge's page", tc.name, body)
		}
		id += 2
	}
	// Content-Length against the DATA frames.
	post := []string{":method", "POST", ":scheme", "https", ":authority", "a.example", ":path", "/"}
	r.headers(id, false, append(post, "content-length", "3")...)
	r.fr.WriteData(id, true, []byte("ab"))
	if st, _ := r.response(id); st != "RST PROTOCOL_ERROR" {
		t.Errorf("fewer bytes than Content-Length: %s", st)
	}
	id += 2
	r.headers(id, false, append(post, "content-length", "1")...)
	r.fr.WriteData(id, false, []byte("ab"))
	if st, _ := r.response(id); st != "RST PROTOCOL_ERROR" {
		t.Errorf("more bytes than Content-Length: %s", st)
	}
	id += 2
	r.headers(id, true, get("/ok")...)
	if st, body := r.response(id); st != "200" || body != "ok" {
		t.Errorf("a good request after them: %s %q", st, body)
	}
	if n := reached.Load(); n > 3 {
		t.Errorf("%d requests reached the origin, want the good one and at most the two body mismatches", n)
	}
}

// TestH2Cookies: cookie crumbs are joined with "; " (RFC 9113 8.2.3).
func TestH2Cookies(t *testing.T) {
	f := newH2Fixture(t, Limits{}, echoOrigin)
	r := f.raw(t)
	r.headers(1, true, get("/c", "cookie", "a=1", "cookie", "b=2", "cookie", "c=3")...)
	if st, _ := r.response(1); st != "200" {
		t.Fatal(st)
	}
	for _, hf := range r.hdr[1] {
		if hf.Name == "x-origin-cookie" && hf.Value != "a=1; b=2; c=3" {
			t.Errorf("the origin's Cookie: %q", hf.Value)
		}
	}
}

// TestH2StreamLimits: past SETTINGS_MAX_CONCURRENT_STREAMS a stream is
// refused with REFUSED_STREAM; past limits.max_streams in the process a
// request is answered 503 with Retry-After.
func TestH2StreamLimits(t *testing.T) {
	hold := make(chan struct{})
	f := newH2Fixture(t, Limits{MaxStreams: 1000}, func(ctx *fasthttp.RequestCtx) {
		<-hold
		ctx.WriteString("ok")
	})
	defer close(hold)
	r := f.raw(t)
	for i := range h2MaxStreams {
		r.headers(uint32(2*i+1), false, get("/hold")...) // open: no END_STREAM
	}
	over := uint32(2*h2MaxStreams + 1)
	r.headers(over, true, get("/")...)
	if st, _ := r.response(over); st != "RST REFUSED_STREAM" {
		t.Errorf("stream %d past the limit: %s", h2MaxStreams+1, st)
	}
	f.p.streams.Store(int64(f.p.limits().MaxStreams))
	defer f.p.streams.Add(-int64(f.p.limits().MaxStreams))
	r2 := f.raw(t)
	r2.headers(1, true, get("/")...)
	st, _ := r2.response(1)
	ra := ""
	for _, hf := range r2.hdr[1] {
		if hf.Name == "retry-after" {
			ra = hf.Value
		}
	}
	if st != "503" || ra != "1" {
		t.Errorf("over limits.max_streams: %s, Retry-After %q", st, ra)
	}
	if n := testutil.ToFloat64(f.p.fm.streamsRefused); n != 1 {
		t.Errorf("edgeproxy_cdn_streams_refused_total = %v", n)
	}
}

// TestHostileH2Floods: frames that cost the server a write or carry
// nothing, sent over and over, get the connection closed with
// ENHANCE_YOUR_CALM once past the budget, and counted by kind.
func TestHostileH2Floods(t *testing.T) {
	f := newH2Fixture(t, Limits{}, func(ctx *fasthttp.RequestCtx) {
		readBody(ctx)
		ctx.WriteString("ok")
	})
	post := []string{":method", "POST", ":scheme", "https", ":authority", "a.example", ":path", "/"}
	for _, tc := range []struct {
		kind  string
		flood func(r *rawH2, i int) error
	}{
		{"ping", func(r *rawH2, i int) error { return r.fr.WritePing(false, [8]byte{byte(i)}) }},
		{"settings", func(r *rawH2, i int) error { return r.fr.WriteSettings() }},
		{"priority", func(r *rawH2, i int) error {
			return r.fr.WritePriority(uint32(2*i+101), http2.PriorityParam{StreamDep: 1, Weight: 10})
		}},
		{"empty_data", func(r *rawH2, i int) error {
			if i == 0 {
				r.headersLocked(1, false, post...)
			}
			return r.fr.WriteData(1, false, nil)
		}},
		{"empty_continuation", func(r *rawH2, i int) error {
			if i == 0 {
				r.inBlock.Store(true)
				return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.block(get("/")...)})
			}
			return r.fr.WriteContinuation(1, false, nil)
		}},
		{"stream_error", func(r *rawH2, i int) error { // WINDOW_UPDATE 0 on a stream: a stream error each
			if i == 0 {
				r.headersLocked(1, false, post...)
			}
			return r.fr.WriteWindowUpdate(1, 0)
		}},
		{"rst_stream", func(r *rawH2, i int) error { // resets of a stream already closed
			return r.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		}},
		{"window_update", func(r *rawH2, i int) error { // updates for a stream already closed
			return r.fr.WriteWindowUpdate(1, 1)
		}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			r := f.raw(t)
			if tc.kind == "rst_stream" || tc.kind == "window_update" {
				r.headers(1, true, get("/")...)
				if st, _ := r.response(1); st != "200" {
					t.Fatal(st)
				}
			}
			errc := make(chan error, 1)
			go func() {
				for i := range 3 * h2FloodBudget {
					if err := r.w(func() error { return tc.flood(r, i) }); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			if got := r.goAway(5 * time.Second); got != "ENHANCE_YOUR_CALM" {
				t.Errorf("%s flood: %s, want GOAWAY ENHANCE_YOUR_CALM", tc.kind, got)
			}
			r.c.Close()
			<-errc
			if n := testutil.ToFloat64(f.p.h2m.floods.WithLabelValues(tc.kind)); n != 1 {
				t.Errorf("edgeproxy_cdn_h2_floods_total{kind=%q} = %v, want 1", tc.kind, n)
			}
		})
	}
	// A header block past twice max_header_bytes (CONTINUATION frames
	// with data) is a connection error.
	r := f.raw(t)
	r.w(func() error {
		r.inBlock.Store(true)
		return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.block(get("/")...)})
	})
	go func() {
		for i := range 1000 {
			if r.w(func() error {
				return r.fr.WriteContinuation(1, false, r.block(fmt.Sprintf("x-%d", i), strings.Repeat("v", 4000)))
			}) != nil {
				return
			}
		}
	}()
	if got := r.goAway(5 * time.Second); got != "PROTOCOL_ERROR" {
		t.Errorf("CONTINUATION flood with data: %s, want GOAWAY PROTOCOL_ERROR", got)
	}
}

// TestHostileH2RapidReset: HEADERS then RST_STREAM, over and over, for a
// path the origin holds: the connection is closed past its reset budget,
// the resets are counted, and few requests reach the origin.
func TestHostileH2RapidReset(t *testing.T) {
	var reached atomic.Int64
	f := newH2Fixture(t, Limits{ConnResetBudget: 20}, func(ctx *fasthttp.RequestCtx) {
		reached.Add(1)
		time.Sleep(time.Second)
	})
	r := f.raw(t)
	go func() {
		for i := range 2000 {
			id := uint32(2*i + 1)
			err := r.w(func() error {
				if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block(get("/hang")...), EndStream: true, EndHeaders: true}); err != nil {
					return err
				}
				return r.fr.WriteRSTStream(id, http2.ErrCodeCancel)
			})
			if err != nil {
				return
			}
		}
	}()
	if got := r.goAway(5 * time.Second); got != "closed" {
		t.Errorf("rapid reset: %s, want the connection closed", got)
	}
	if n := testutil.ToFloat64(f.p.fm.resetCutoffs.WithLabelValues("connection")); n != 1 {
		t.Errorf("reset cutoffs %v, want 1", n)
	}
	time.Sleep(50 * time.Millisecond)
	if n := reached.Load(); n > 21 {
		t.Errorf("%d reset requests reached the origin", n)
	}
	t.Logf("rapid reset: %d requests reached the origin, %v abandoned before sending", reached.Load(), testutil.ToFloat64(f.p.fm.abandoned.WithLabelValues("before_send")))
}

// TestH2IdleAndShutdown: an idle connection gets GOAWAY(NO_ERROR) after
// the idle timeout; on shutdown a connection gets GOAWAY with its last
// stream, that stream finishes, then the connection closes.
func TestH2IdleAndShutdown(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	f := newH2Fixture(t, Limits{IdleTimeout: 300 * time.Millisecond}, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/hold" {
			<-release
		}
		ctx.WriteString("done")
	})
	r := f.raw(t)
	r.headers(1, true, get("/")...)
	r.response(1)
	start := time.Now()
	if got := r.goAway(3 * time.Second); got != "NO_ERROR" || time.Since(start) < 250*time.Millisecond {
		t.Errorf("idle: %s after %v, want NO_ERROR after 300 ms", got, time.Since(start))
	}

	r = f.raw(t)
	r.headers(1, true, get("/hold")...)
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go f.p.shutdownH2(ctx)
	var ga *http2.GoAwayFrame
	for ga == nil {
		fr, err := r.next(2 * time.Second)
		if err != nil {
			t.Fatalf("on shutdown: %v, want GOAWAY", err)
		}
		ga, _ = fr.(*http2.GoAwayFrame)
	}
	if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
		t.Fatalf("on shutdown: GOAWAY %v last stream %d, want NO_ERROR last stream 1", ga.ErrCode, ga.LastStreamID)
	}
	r.headers(3, true, get("/")...) // after the GOAWAY: ignored
	once.Do(func() { close(release) })
	if st, body := r.response(1); st != "200" || body != "done" {
		t.Errorf("the stream in flight at shutdown: %s %q", st, body)
	}
	if got := r.goAway(2 * time.Second); got != "closed" {
		t.Errorf("after its last stream: %s, want closed", got)
	}
}

// TestH2WritesPerResponse: 32 responses ready at about the same time on
// one connection go out in far fewer than 32 writes.
func TestH2WritesPerResponse(t *testing.T) {
	const n = 32
	var arrived sync.WaitGroup
	arrived.Add(n)
	gate := make(chan struct{})
	f := newH2Fixture(t, Limits{}, func(ctx *fasthttp.RequestCtx) {
		arrived.Done()
		<-gate
		ctx.WriteString("hello from the origin\n")
	})
	r := f.raw(t)
	sc := <-f.conns
	for i := range n {
		r.headers(uint32(2*i+1), true, get("/")...)
	}
	// Read the SETTINGS exchange first, so only responses are counted.
	arrived.Wait()
	time.Sleep(20 * time.Millisecond)
	before := sc.writes.Load()
	close(gate)
	done := 0
	for done < n {
		fr, err := r.next(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := fr.(*http2.DataFrame); ok && d.StreamEnded() {
			done++
		}
	}
	w := sc.writes.Load() - before
	t.Logf("%d responses in %d writes (%.2f per response)", n, w, float64(w)/n)
	if w > n/2 {
		t.Errorf("%d writes for %d responses, want at most %d", w, n, n/2)
	}
}

// FuzzH2Conn: any bytes after the preface and a SETTINGS frame never
// panic the server, and the connection's goroutines end when it does.
func FuzzH2Conn(f *testing.F) {
	fx := newH2Fixture(f, Limits{IdleTimeout: time.Second, ReadHeaderTimeout: time.Second}, func(ctx *fasthttp.RequestCtx) {
		readBody(ctx)
		ctx.WriteString("ok")
	})
	seed := func(frames ...func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer)) []byte {
		var b bytes.Buffer
		fr := http2.NewFramer(&b, nil)
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, fn := range frames {
			fn(fr, enc, &hb)
		}
		return b.Bytes()
	}
	hdrs := func(id uint32, end bool, fields ...string) func(*http2.Framer, *hpack.Encoder, *bytes.Buffer) {
		return func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
			hb.Reset()
			for i := 0; i+1 < len(fields); i += 2 {
				enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
			}
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: end, EndHeaders: true})
		}
	}
	f.Add(seed(hdrs(1, true, get("/")...)))
	f.Add(seed(hdrs(1, false, ":method", "POST", ":scheme", "https", ":authority", "a", ":path", "/", "content-length", "4"),
		func(fr *http2.Framer, _ *hpack.Encoder, _ *bytes.Buffer) { fr.WriteData(1, true, []byte("abcd")) }))
	f.Add(seed(hdrs(1, false, get("/")...), func(fr *http2.Framer, _ *hpack.Encoder, _ *bytes.Buffer) {
		fr.WriteRSTStream(1, http2.ErrCodeCancel)
		fr.WriteWindowUpdate(0, 1000)
		fr.WritePing(false, [8]byte{})
		fr.WritePriority(3, http2.PriorityParam{StreamDep: 3})
	}))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := fx.ln.Dial()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.WriteString(http2.ClientPreface)
		http2.NewFramer(&b, nil).WriteSettings()
		b.Write(data)
		go func() { c.Write(b.Bytes()) }()
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		io.Copy(io.Discard, c) // what the server answers, until it closes or a pause
		c.Close()
		deadline := time.Now().Add(3 * time.Second)
		for {
			open := len(fx.p.h2conns.all())
			if open == 0 && fx.p.streams.Load() == 0 {
				break
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Fatalf("%d connections, %d streams still served 3 s after the client went:\n%s", open, fx.p.streams.Load(), buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

var _ = rand.IntN

// TestH2BodyTimeout: a request body that stops coming is answered after
// the body timeout: 408 for one being collected whole, 400 for one being
// streamed to the origin (the origin's read fails); the connection
// serves on.
func TestH2BodyTimeout(t *testing.T) {
	f := newH2Fixture(t, Limits{BodyTimeout: 300 * time.Millisecond}, func(ctx *fasthttp.RequestCtx) {
		readBody(ctx)
		ctx.WriteString("ok")
	})
	r := f.raw(t)
	post := []string{":method", "POST", ":scheme", "https", ":authority", "a.example", ":path", "/"}
	for _, tc := range []struct {
		cl, want string
		id       uint32
	}{{"100", "408", 1}, {"1000000", "400", 3}} {
		start := time.Now()
		r.headers(tc.id, false, append(post, "content-length", tc.cl)...)
		r.fr.WriteData(tc.id, false, []byte("abc"))
		st, body := r.response(tc.id)
		if d := time.Since(start); st != tc.want || !strings.Contains(body, "request id: ") || d < 250*time.Millisecond || d > 3*time.Second {
			t.Errorf("Content-Length %s, 3 bytes, then nothing: %s %q after %v, want %s after 300 ms", tc.cl, st, body, d, tc.want)
		}
	}
	r.headers(5, true, get("/")...)
	if st, body := r.response(5); st != "200" || body != "ok" {
		t.Errorf("after them: %s %q", st, body)
	}
	waitStreams(t, f.p)
}

// waitStreams waits for the streams in flight to end: a worker counts
// its stream out just after the last frame is written.
func waitStreams(t *testing.T, p *Proxy) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for p.streams.Load() != 0 {
		if time.Now().After(deadline) {
			t.Errorf("%d streams still counted in flight", p.streams.Load())
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestH2ExpectContinue: a request with Expect: 100-continue gets 100 at
// once, then its response; the origin gets the body, not the Expect.
func TestH2ExpectContinue(t *testing.T) {
	var sawExpect atomic.Bool
	f := newH2Fixture(t, Limits{}, func(ctx *fasthttp.RequestCtx) {
		if len(ctx.Request.Header.Peek("Expect")) > 0 {
			sawExpect.Store(true)
		}
		b, _ := readBody(ctx)
		fmt.Fprintf(ctx, "len=%d", len(b))
	})
	r := f.raw(t)
	r.headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "a.example", ":path", "/", "content-length", "5", "expect", "100-continue")
	var first string
	for first == "" {
		fr, err := r.next(2 * time.Second)
		if err != nil {
			t.Fatalf("no 100 Continue: %v", err)
		}
		if h, ok := fr.(*http2.HeadersFrame); ok && h.StreamID == 1 {
			first = r.status(1)
			r.hdr[1] = nil
		}
	}
	if first != "100" {
		t.Fatalf("first answer %s, want 100", first)
	}
	r.fr.WriteData(1, true, []byte("hello"))
	if st, body := r.response(1); st != "200" || body != "len=5" {
		t.Errorf("after 100 Continue: %s %q", st, body)
	}
	if sawExpect.Load() {
		t.Error("the origin got the Expect header")
	}
}

// TestH2BodyLimit: a body over limits.max_body_bytes gets 413, whether its
// Content-Length says so (answered at once) or it is streamed without one
// (answered when the limit is crossed); the origin never gets it whole.
func TestH2BodyLimit(t *testing.T) {
	var longest atomic.Int64
	f := newH2Fixture(t, Limits{MaxBodyBytes: 100000}, func(ctx *fasthttp.RequestCtx) {
		b, _ := readBody(ctx)
		if n := int64(len(b)); n > longest.Load() {
			longest.Store(n)
		}
		ctx.WriteString("ok")
	})
	c := f.client()
	for _, known := range []bool{true, false} {
		var body io.Reader = bytes.NewReader(patterned(300000))
		if !known {
			body = io.MultiReader(body)
		}
		req, _ := http.NewRequest("POST", "http://a.example/up", body)
		if !known {
			req.ContentLength = -1
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("known length %v: %v", known, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || !strings.Contains(string(b), "request id: ") {
			t.Errorf("300000 bytes over a 100000 limit (length known %v): %d %q", known, resp.StatusCode, b)
		}
	}
	waitStreams(t, f.p)
	if n := longest.Load(); n > 100001+16<<10 {
		t.Errorf("the origin got a body of %d bytes past a limit of 100000", n)
	}
}

// TestH2HeadersOnClosedStream: HEADERS on a stream whose response has gone
// out and whose request had ended is a connection error (RFC 9113 5.1,
// "closed"), however soon it follows the response: the client may send it
// before the worker that wrote the response has taken the stream out.
func TestH2HeadersOnClosedStream(t *testing.T) {
	f := newH2Fixture(t, Limits{}, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
	for i := range 100 {
		r := f.raw(t)
		r.headers(1, true, get("/")...)
		if st, body := r.response(1); st != "200" || body != "ok" {
			t.Fatalf("round %d: %s %q", i, st, body)
		}
		r.headers(1, true, get("/")...)
		for {
			fr, err := r.next(5 * time.Second)
			if err != nil {
				break // closed after the GOAWAY
			}
			if rst, ok := fr.(*http2.RSTStreamFrame); ok {
				t.Fatalf("round %d: RST_STREAM %v, want a connection error", i, rst.ErrCode)
			}
			if ga, ok := fr.(*http2.GoAwayFrame); ok {
				if ga.ErrCode != http2.ErrCodeProtocol {
					t.Fatalf("round %d: GOAWAY %v, want PROTOCOL_ERROR", i, ga.ErrCode)
				}
				break
			}
		}
		r.c.Close()
	}
}
