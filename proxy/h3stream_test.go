package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
)

// Raw HTTP/3 against the proxy's own server: frames and field sections
// written by hand on quic-go streams, so that what a well-behaved client
// never sends can be sent.

func h3Frame(b []byte, typ uint64, payload []byte) []byte {
	b = quicvarint.Append(b, typ)
	b = quicvarint.Append(b, uint64(len(payload)))
	return append(b, payload...)
}

// h3Fields is a QPACK field section of name, value pairs.
func h3Fields(kv ...string) []byte {
	var buf bytes.Buffer
	enc := qpack.NewEncoder(&buf)
	for i := 0; i+1 < len(kv); i += 2 {
		enc.WriteField(qpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return buf.Bytes()
}

func h3Request(method, path string, more ...string) []byte {
	return h3Fields(append([]string{":method", method, ":scheme", "https", ":authority", "a.example", ":path", path}, more...)...)
}

// h3Answer is what came back on a request stream: the status and body,
// or the stream's reset code (0: none), or the error.
type h3Answer struct {
	status int
	header map[string]string
	body   string
	reset  quic.StreamErrorCode
	err    error

	continued bool // a 100 came first
}

// roundTrip writes raw on a new stream (FIN after it) and reads the
// answer.
func roundTrip(t *testing.T, qc *quic.Conn, raw []byte) h3Answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return h3Answer{err: err}
	}
	str.SetDeadline(time.Now().Add(3 * time.Second))
	str.Write(raw)
	str.Close()
	b, err := io.ReadAll(str)
	var a h3Answer
	if err != nil {
		var se *quic.StreamError
		if errors.As(err, &se) {
			a.reset = se.ErrorCode
			return a
		}
		a.err = err
		return a
	}
	dec := qpack.NewDecoder()
	for len(b) > 0 {
		typ, n, err := quicvarint.Parse(b)
		if err != nil {
			a.err = err
			return a
		}
		b = b[n:]
		l, n, err := quicvarint.Parse(b)
		if err != nil || uint64(len(b)-n) < l {
			a.err = fmt.Errorf("a frame cut short")
			return a
		}
		payload := b[n : n+int(l)]
		b = b[n+int(l):]
		switch typ {
		case h3FrameHeaders:
			a.header = map[string]string{}
			next := dec.Decode(payload)
			for {
				hf, err := next()
				if err == io.EOF {
					break
				}
				if err != nil {
					a.err = err
					return a
				}
				if hf.Name == ":status" {
					fmt.Sscan(hf.Value, &a.status)
					if a.status == 100 {
						a.continued = true
					}
				}
				a.header[hf.Name] = hf.Value
			}
		case h3FrameData:
			a.body += string(payload)
		}
	}
	return a
}

// rawDial is a QUIC connection to dst speaking h3, with no HTTP/3 client
// on it (no control stream of its own).
func rawDial(t *testing.T, f *h3Fixture, dst netip.AddrPort) *quic.Conn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	qc, err := quic.Dial(ctx, pc, net.UDPAddrFromAddrPort(dst),
		&tls.Config{RootCAs: f.pool, ServerName: "a.example", NextProtos: []string{"h3"}}, &quic.Config{MaxIdleTimeout: 5 * time.Second})
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, ""); pc.Close() })
	return qc
}

// TestHTTP3Frames: the request stream's frames as RFC 9114 has them:
// unknown and reserved types skipped wherever they come, a body in
// several DATA frames, trailers dropped, a body of unknown length
// streamed (chunked to the origin), each body's Content-Length held to
// its DATA; a malformed request reset with H3_MESSAGE_ERROR; a head over
// max_header_bytes answered 431; the server's SETTINGS.
func TestHTTP3Frames(t *testing.T) {
	f := startH3(t, "")
	dst := netip.MustParseAddrPort("192.0.2.10:443")
	// A raw connection: an HTTP/3 client would take the server's control
	// stream itself, racing the read below.
	qc := rawDial(t, f, dst)

	// The server's control stream: SETTINGS first, the field section
	// limit in it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	us, err := qc.AcceptUniStream(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	us.SetReadDeadline(time.Now().Add(3 * time.Second))
	r := quicvarint.NewReader(us)
	typ, _ := quicvarint.Read(r)
	ft, _ := quicvarint.Read(r)
	fl, _ := quicvarint.Read(r)
	set := make([]byte, fl)
	io.ReadFull(r, set)
	id, n, _ := quicvarint.Parse(set)
	v, _, _ := quicvarint.Parse(set[n:])
	if typ != 0 || ft != h3FrameSettings || id != 0x6 || v != 32<<10 {
		t.Errorf("the server's control stream: type %d, frame %d, setting %#x = %d; want 0, SETTINGS, 0x6 = 32768", typ, ft, id, v)
	}

	grease := h3Frame(nil, 0x21+0x1f*3, []byte("grease"))
	cases := []struct {
		name   string
		raw    []byte
		status int
		body   string // a prefix
		reset  quic.StreamErrorCode
	}{
		{"GET with grease before HEADERS", h3Frame(grease, h3FrameHeaders, h3Request("GET", "/x")), 200, "ok /x", 0},
		{"a body in DATA frames, grease and trailers",
			h3Frame(h3Frame(h3Frame(h3Frame(h3Frame(nil, h3FrameHeaders, h3Request("POST", "/echo", "content-length", "5")),
				h3FrameData, []byte("he")), 0x21, nil), h3FrameData, []byte("llo")), h3FrameHeaders, h3Fields("x-trailer", "t")),
			200, `echo 5 [] <nil> "hello"`, 0},
		{"a body of unknown length", h3Frame(h3Frame(h3Frame(nil, h3FrameHeaders, h3Request("POST", "/echo")),
			h3FrameData, bytes.Repeat([]byte("a"), 100<<10)), h3FrameData, []byte("b")),
			200, `echo -1 ["chunked"] <nil> "aaaa`, 0},
		{"a large body of a known length", h3Frame(h3Frame(nil, h3FrameHeaders, h3Request("POST", "/echo", "content-length", "102400")),
			h3FrameData, bytes.Repeat([]byte("c"), 100<<10)), 200, `echo 102400 [] <nil> "cccc`, 0},
		{"more DATA than Content-Length", h3Frame(h3Frame(nil, h3FrameHeaders, h3Request("POST", "/echo", "content-length", "3")),
			h3FrameData, []byte("hello")), 0, "", h3MessageError},
		{"less DATA than Content-Length", h3Frame(h3Frame(nil, h3FrameHeaders, h3Request("POST", "/echo", "content-length", "9")),
			h3FrameData, []byte("hello")), 0, "", h3MessageError},
		{"Content-Length and no DATA", h3Frame(nil, h3FrameHeaders, h3Request("POST", "/echo", "content-length", "9")), 0, "", h3MessageError},
		{"an upper-case name", h3Frame(nil, h3FrameHeaders, h3Request("GET", "/x", "X-Upper", "1")), 0, "", h3MessageError},
		{"a connection-specific header", h3Frame(nil, h3FrameHeaders, h3Request("GET", "/x", "connection", "close")), 0, "", h3MessageError},
		{"no :path", h3Frame(nil, h3FrameHeaders, h3Fields(":method", "GET", ":scheme", "https", ":authority", "a.example")), 0, "", h3MessageError},
		{"a pseudo-header after a field", h3Frame(nil, h3FrameHeaders, h3Fields(":method", "GET", "x-a", "1", ":scheme", "https", ":authority", "a.example", ":path", "/")), 0, "", h3MessageError},
		{"a Host other than :authority", h3Frame(nil, h3FrameHeaders, h3Request("GET", "/x", "host", "b.example")), 0, "", h3MessageError},
		{"a value with outer whitespace", h3Frame(nil, h3FrameHeaders, h3Request("GET", "/x", "x-a", " v")), 400, "400 Bad Request", 0},
		{"a path that crosses a route", h3Frame(nil, h3FrameHeaders, h3Request("GET", "/a/..%2fb")), 400, "400 Bad Request", 0},
		{"a head over max_header_bytes", h3Frame(nil, h3FrameHeaders, h3Request("GET", "/x", "x-big", strings.Repeat("b", 40<<10))), 431, "431 Request Header Fields Too Large", 0},
		{"HEAD", h3Frame(nil, h3FrameHeaders, h3Request("HEAD", "/x")), 200, "", 0},
		{"Expect: 100-continue", h3Frame(h3Frame(nil, h3FrameHeaders, h3Request("POST", "/echo", "content-length", "2", "expect", "100-continue")),
			h3FrameData, []byte("hi")), 200, `echo 2 [] <nil> "hi"`, 0},
	}
	for _, tc := range cases {
		a := roundTrip(t, qc, tc.raw)
		if a.err != nil {
			t.Errorf("%s: %v", tc.name, a.err)
			continue
		}
		if a.status != tc.status || a.reset != tc.reset || !strings.HasPrefix(a.body, tc.body) {
			t.Errorf("%s: status %d, reset %#x, body %.60q; want %d, %#x, %q", tc.name, a.status, a.reset, a.body, tc.status, tc.reset, tc.body)
		}
		if strings.HasPrefix(tc.name, "Expect") != a.continued {
			t.Errorf("%s: a 100 response %v", tc.name, a.continued)
		}
		if cl, ok := a.header["content-length"]; ok && tc.name != "HEAD" && cl != fmt.Sprint(len(a.body)) {
			t.Errorf("%s: content-length %q, body %d bytes", tc.name, a.header["content-length"], len(a.body))
		}
	}
	if qc.Context().Err() != nil {
		t.Fatalf("the connection ended: %v", context.Cause(qc.Context()))
	}

	// Connection errors, each on a connection of its own.
	for _, tc := range []struct {
		name string
		do   func(qc *quic.Conn)
		code quic.ApplicationErrorCode
	}{
		{"DATA before HEADERS", func(qc *quic.Conn) {
			roundTrip(t, qc, h3Frame(nil, h3FrameData, []byte("x")))
		}, h3FrameUnexpected},
		{"SETTINGS on a request stream", func(qc *quic.Conn) {
			roundTrip(t, qc, h3Frame(h3Frame(nil, h3FrameHeaders, h3Request("POST", "/echo")), h3FrameSettings, nil))
		}, h3FrameUnexpected},
		{"a control stream without SETTINGS first", func(qc *quic.Conn) {
			us, _ := qc.OpenUniStream()
			us.Write(h3Frame([]byte{0}, h3FrameGoAway, []byte{0}))
		}, h3MissingSettings},
		{"two control streams", func(qc *quic.Conn) {
			for range 2 {
				us, _ := qc.OpenUniStream()
				us.Write(h3Frame([]byte{0}, h3FrameSettings, nil))
			}
		}, h3StreamCreation},
		{"a push stream from the client", func(qc *quic.Conn) {
			us, _ := qc.OpenUniStream()
			us.Write([]byte{1})
		}, h3StreamCreation},
	} {
		qc := rawDial(t, f, dst)
		tc.do(qc)
		select {
		case <-qc.Context().Done():
		case <-time.After(3 * time.Second):
		}
		var ae *quic.ApplicationError
		if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != tc.code || !ae.Remote {
			t.Errorf("%s: the connection ended with %v, want the proxy's %#x", tc.name, err, tc.code)
		}
	}
}

// TestHTTP3FinAfterHeaders: a request whose stream ends in a later packet
// than its HEADERS (no Content-Length) goes to the origin without a body,
// not with an empty chunked one (which an origin could read as a request
// of its own); one whose DATA comes later still goes chunked, every byte
// of it.
func TestHTTP3FinAfterHeaders(t *testing.T) {
	f := startH3(t, "")
	qc := rawDial(t, f, netip.MustParseAddrPort("192.0.2.10:443"))
	for _, c := range []struct {
		name string
		data []byte // sent after the pause, before the FIN
		want string
	}{
		{"no body", nil, `echo 0 [] <nil> ""`},
		{"a body after the pause", []byte("xy"), `echo -1 ["chunked"] <nil> "xy"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			str, err := qc.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			str.SetDeadline(time.Now().Add(3 * time.Second))
			str.Write(h3Frame(nil, h3FrameHeaders, h3Request("POST", "/echo")))
			time.Sleep(100 * time.Millisecond) // the HEADERS alone in their packet, read alone
			if c.data != nil {
				str.Write(h3Frame(nil, h3FrameData, c.data))
			}
			str.Close()
			b, err := io.ReadAll(str)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, []byte(c.want)) {
				t.Errorf("the origin saw %q, want %s", b, c.want)
			}
		})
	}
}
