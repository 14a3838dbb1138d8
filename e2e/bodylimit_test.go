package e2e

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// unsized is a request body of unknown length: sent chunked over HTTP/1.1,
// without a content-length over HTTP/2 and HTTP/3.
type unsized struct{ r io.Reader }

func (u unsized) Read(p []byte) (int, error) { return u.r.Read(p) }

// TestHostileStreamedBodyOverLimit: a request body of unknown length that
// grows past max_body_bytes (1000 here) is cut at the limit on every
// protocol: the client gets 413 or a reset, and the origin never reads more
// than the limit. (fasthttp's client drops an error that comes with data,
// so a limit that returned the crossing read with its error let the whole
// body through.)
func TestHostileStreamedBodyOverLimit(t *testing.T) {
	f := startCDN(t)
	h3, closeH3 := h3Client(t, f.pool, netip.MustParseAddrPort("192.0.2.10:443"))
	defer closeH3()
	h1 := f.ns.HTTPClient()
	for _, e := range []struct {
		proto, url string
		c          *http.Client
	}{
		{"HTTP/1.1", "http://192.0.2.10/upload", h1},
		{"HTTP/2", "https://a.example/upload", h2Client(f)},
		{"HTTP/3", "https://a.example/upload", h3},
	} {
		before := f.originA.requests.Load()
		req, _ := http.NewRequest("POST", e.url, unsized{strings.NewReader(strings.Repeat("x", 64<<10))})
		req.Host = "a.example"
		resp, err := e.c.Do(req)
		status := 0
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		if err == nil && status != 413 {
			t.Errorf("%s: a 64 KiB body over a 1000-byte limit got %d, want 413 (or a reset)", e.proto, status)
		}
		if got := f.originA.maxBody.Load(); got > 1000 {
			t.Errorf("%s: the origin read a body of %d bytes through a 1000-byte limit (%d requests reached it)", e.proto, got, f.originA.requests.Load()-before)
		}
	}
}
