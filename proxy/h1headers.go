package proxy

import (
	"bytes"
	"net/netip"
	"sync"

	"github.com/valyala/fasthttp"
)

// The forwarding policy, for every client protocol: HTTP/1.1 requests
// arrive as fasthttp headers, and the HTTP/2 and HTTP/3 handler copies its
// requests into fasthttp headers for the origin pools, so one pass over
// them applies the policy, appending what it adds: looking headers up one
// by one, and building values with string concatenation, cost a third of
// the proxy's own CPU time per request.

// h1Scan is what one pass over a request's headers found.
type h1Scan struct {
	xff, fwd, loop [][]byte // values to extend
	conn           [][]byte // Connection values: more headers to drop
	upgrade        []byte   // the Upgrade value
	drop           bool     // some header must go
}

var (
	hXFF      = []byte("X-Forwarded-For")
	hFwd      = []byte("Forwarded")
	hLoop     = []byte("CDN-Loop")
	hProto    = []byte("X-Forwarded-Proto")
	hHost     = []byte("X-Forwarded-Host")
	hEdge     = []byte("X-Edge-Addr")
	hReqID    = []byte("X-Request-Id")
	hConn     = []byte("Connection")
	hAltSvc   = []byte("Alt-Svc")
	hUpgrade  = []byte("Upgrade")
	hTE       = []byte("Transfer-Encoding")
	hopBytes  [][]byte
	ourBytes  = [][]byte{hXFF, hFwd, hLoop, hProto, hHost, hEdge, hReqID}
	scratches = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}
)

func init() {
	for _, h := range hopHeaders {
		if h != "Transfer-Encoding" { // fasthttp frames bodies itself
			hopBytes = append(hopBytes, []byte(h))
		}
	}
}

func isOneOf(k []byte, set [][]byte) bool {
	for _, s := range set {
		if len(k) == len(s) && bytes.EqualFold(k, s) {
			return true
		}
	}
	return false
}

// scanRequest looks at every header once.
func scanRequest(h *fasthttp.RequestHeader, sc *h1Scan) {
	for k, v := range h.All() {
		switch {
		case len(k) == len(hXFF) && bytes.EqualFold(k, hXFF):
			sc.xff = append(sc.xff, v)
			sc.drop = true
		case len(k) == len(hFwd) && bytes.EqualFold(k, hFwd):
			sc.fwd = append(sc.fwd, v)
			sc.drop = true
		case len(k) == len(hLoop) && bytes.EqualFold(k, hLoop):
			sc.loop = append(sc.loop, v)
			sc.drop = true
		case len(k) == len(hConn) && bytes.EqualFold(k, hConn):
			sc.conn = append(sc.conn, v)
			sc.drop = true
		case len(k) == len(hUpgrade) && bytes.EqualFold(k, hUpgrade):
			sc.upgrade = v
			sc.drop = true
		case isOneOf(k, hopBytes), isOneOf(k, ourBytes):
			sc.drop = true
		}
	}
}

// loopIn reports whether CDN-Loop values name id.
func loopIn(values [][]byte, id string) bool {
	for _, v := range values {
		for len(v) > 0 {
			var f []byte
			f, v, _ = bytes.Cut(v, []byte{','})
			if i := bytes.IndexByte(f, ';'); i >= 0 {
				f = f[:i]
			}
			if string(bytes.TrimSpace(f)) == id || bytes.EqualFold(bytes.TrimSpace(f), []byte(id)) {
				return true
			}
		}
	}
	return false
}

// rewriteRequest applies the forwarding policy: drops hop-by-hop headers and
// those we set, and appends X-Forwarded-For, X-Forwarded-Proto,
// X-Forwarded-Host, Forwarded, CDN-Loop, X-Edge-Addr and X-Request-Id.
func rewriteRequest(h *fasthttp.RequestHeader, sc *h1Scan, client, edge netip.AddrPort, host []byte, tls bool, loopID, id string) {
	bp := scratches.Get().(*[]byte)
	b := (*bp)[:0]
	defer func() { *bp = b; scratches.Put(bp) }()

	proto := "http"
	if tls {
		proto = "https"
	}
	// Build the values before dropping the headers they extend: the scan
	// holds slices of them.
	start := len(b)
	b = joinList(b, sc.xff)
	b = client.Addr().AppendTo(b)
	xff := b[start:]

	start = len(b)
	b = joinList(b, sc.fwd)
	b = append(b, "for="...)
	b = appendNode(b, client.Addr())
	b = append(b, ";by="...)
	b = appendNode(b, edge.Addr())
	b = append(b, ";proto="...)
	b = append(b, proto...)
	if len(host) > 0 {
		b = append(b, ";host="...)
		b = append(b, quoteIfNeeded(string(host))...)
	}
	fwd := b[start:]

	start = len(b)
	b = joinList(b, sc.loop)
	b = append(b, loopID...)
	loop := b[start:]

	start = len(b)
	b = edge.AppendTo(b)
	edgeV := b[start:]

	if sc.drop {
		for _, v := range sc.conn {
			for _, t := range bytes.Split(v, []byte{','}) {
				if t = bytes.TrimSpace(t); len(t) > 0 {
					h.DelBytes(t)
				}
			}
		}
		for _, k := range hopBytes {
			h.DelBytes(k)
		}
		for _, k := range ourBytes {
			h.DelBytes(k)
		}
	}
	h.AddBytesKV(hXFF, xff)
	h.AddBytesKV(hProto, []byte(proto))
	h.AddBytesKV(hHost, host)
	h.AddBytesKV(hFwd, fwd)
	h.AddBytesKV(hLoop, loop)
	h.AddBytesKV(hEdge, edgeV)
	h.AddBytesKV(hReqID, []byte(id))
}

func joinList(b []byte, vs [][]byte) []byte {
	for _, v := range vs {
		b = append(b, v...)
		b = append(b, ", "...)
	}
	return b
}

func appendNode(b []byte, a netip.Addr) []byte {
	if a.Is6() {
		b = append(b, `"[`...)
		b = a.AppendTo(b)
		return append(b, `]"`...)
	}
	return a.AppendTo(b)
}

// rewriteResponse drops the hop-by-hop headers of an origin's response and
// sets X-Request-Id and Alt-Svc.
func rewriteResponse(h *fasthttp.ResponseHeader, id, altSvc string) {
	drop := false
	var conn [][]byte
	for k, v := range h.All() {
		switch {
		case len(k) == len(hConn) && bytes.EqualFold(k, hConn):
			conn = append(conn, v)
			drop = true
		case isOneOf(k, hopBytes), bytes.EqualFold(k, hReqID), bytes.EqualFold(k, hAltSvc):
			drop = true
		}
	}
	if drop {
		for _, v := range conn {
			for _, t := range bytes.Split(v, []byte{','}) {
				if t = bytes.TrimSpace(t); len(t) > 0 {
					h.DelBytes(t)
				}
			}
		}
		for _, k := range hopBytes {
			h.DelBytes(k)
		}
		h.DelBytes(hReqID)
		if altSvc != "" {
			h.DelBytes(hAltSvc)
		}
	}
	h.AddBytesKV(hReqID, []byte(id))
	if altSvc != "" {
		h.AddBytesKV(hAltSvc, []byte(altSvc))
	}
}
