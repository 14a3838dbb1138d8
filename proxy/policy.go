package proxy

import (
	"bytes"
	"iter"
	"net/netip"
	"sync"

	"github.com/valyala/fasthttp"
)

// The forwarding policy, for every client protocol: HTTP/1.1 requests
// arrive as fasthttp headers, and the HTTP/2 and HTTP/3 handler copies its
// requests into fasthttp headers for the origin pools, so one pass over
// them applies the policy, appending what it adds: looking headers up one
// by one, and building values with string concatenation, were a large share
// of the proxy's own CPU time per request (docs/cdn.md, "Forwarding").

// h1Scan is what one pass over a request's headers found.
type h1Scan struct {
	xff, fwd, loop [][]byte // values to extend
	conn           [][]byte // Connection values: more headers to drop
	upgrade        []byte   // the Upgrade value
	drop           bool     // some header must go
	spoofed        int      // headers the client may not send: ours, or look-alikes
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
	setBytes  = [][]byte{hProto, hHost, hEdge, hReqID} // ours, replaced rather than extended
	scratches = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

	// framingBytes are never dropped for naming in Connection: fasthttp
	// frames the message by them (a request naming them is refused first).
	framingBytes = [][]byte{[]byte("Content-Length"), hTE, []byte("Host")}
)

func init() {
	for _, h := range hopHeaders {
		if h != "Transfer-Encoding" { // fasthttp frames bodies itself
			hopBytes = append(hopBytes, []byte(h))
		}
	}
}

// sameName reports whether header name k is n in any letter case, with
// '_' for '-' when under: CGI, WSGI and PHP map X_Edge_Addr and
// X-Edge-Addr to the same variable, so an origin behind them cannot tell
// the two apart.
func sameName(k, n []byte, under bool) bool {
	if len(k) != len(n) {
		return false
	}
	for i, c := range k {
		d := n[i]
		if c == d {
			continue
		}
		if under && c == '_' && d == '-' {
			continue
		}
		if lc := c | 0x20; lc >= 'a' && lc <= 'z' && lc == d|0x20 {
			continue
		}
		return false
	}
	return true
}

func isOneOf(k []byte, set [][]byte) bool {
	for _, s := range set {
		if sameName(k, s, false) {
			return true
		}
	}
	return false
}

// lookalike reports whether k, which has an underscore, spells a header
// the policy sets or drops (Transfer-Encoding included: only fasthttp's
// own may frame the body).
func lookalike(k []byte) bool {
	if bytes.IndexByte(k, '_') < 0 {
		return false
	}
	for _, set := range [][][]byte{ourBytes, hopBytes, {hTE}} {
		for _, s := range set {
			if sameName(k, s, true) {
				return true
			}
		}
	}
	return false
}

// scanRequest looks at every header once. Names match in any letter case.
func scanRequest(h *fasthttp.RequestHeader, sc *h1Scan) {
	for k, v := range h.All() {
		sc.header(k, v)
	}
}

// header takes one request header into the scan: the one classification
// of every engine's request headers (fasthttp's here, the HTTP/1.1
// engine's raw heads in h1head.go).
func (sc *h1Scan) header(k, v []byte) {
	switch {
	case sameName(k, hXFF, false):
		sc.xff = append(sc.xff, v)
		sc.drop = true
	case sameName(k, hFwd, false):
		sc.fwd = append(sc.fwd, v)
		sc.drop = true
	case sameName(k, hLoop, false):
		sc.loop = append(sc.loop, v)
		sc.drop = true
	case sameName(k, hConn, false):
		sc.conn = append(sc.conn, v)
		sc.drop = true
	case sameName(k, hUpgrade, false):
		sc.upgrade = v
		sc.drop = true
	case isOneOf(k, setBytes):
		sc.spoofed++
		sc.drop = true
	case isOneOf(k, hopBytes):
		sc.drop = true
	case lookalike(k):
		sc.spoofed++
		sc.drop = true
	}
}

// connNames reports whether a Connection value (comma-separated tokens)
// names k, in any letter case. The framing headers never count.
func connNames(conn []byte, k []byte) bool {
	if isOneOf(k, framingBytes) {
		return false
	}
	for len(conn) > 0 {
		var t []byte
		t, conn, _ = bytes.Cut(conn, []byte{','})
		if t = bytes.TrimSpace(t); len(t) > 0 && sameName(k, t, false) {
			return true
		}
	}
	return false
}

// headerFields is what dropHeaders needs of request and response headers.
type headerFields interface {
	All() iter.Seq2[[]byte, []byte]
	DelBytes(key []byte)
	Len() int
}

// dropHeaders deletes every header drop names, however it is spelled.
// fasthttp deletes by exact name (header normalizing is off, so that
// origins see names as clients wrote them): each spelling is deleted in
// turn. conn are Connection values, copied out of the header.
func dropHeaders(h headerFields, conn []byte, drop func(k []byte) bool) {
	var buf [64]byte
	for range h.Len() + 2 { // each round deletes a spelling; Connection: close is one more
		var victim []byte
		for k := range h.All() {
			if drop(k) || len(conn) > 0 && connNames(conn, k) {
				victim = append(buf[:0], k...)
				break
			}
		}
		if victim == nil {
			return
		}
		h.DelBytes(victim)
	}
}

// dropRequest is the request's drop: hop-by-hop headers, ours, and their
// look-alikes.
func dropRequest(k []byte) bool {
	return isOneOf(k, hopBytes) || isOneOf(k, ourBytes) || lookalike(k)
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

// forwarded is what the forwarding policy adds to a request, in the order
// it is added; the values share one scratch buffer.
type forwarded struct {
	xff, proto, host, fwd, loop, edge, id []byte
}

// append writes the headers the policy adds, with their values, to an
// origin request's head b.
func (f *forwarded) append(b []byte) []byte {
	b = appendField(b, hXFF, f.xff)
	b = appendField(b, hProto, f.proto)
	b = appendField(b, hHost, f.host)
	b = appendField(b, hFwd, f.fwd)
	b = appendField(b, hLoop, f.loop)
	b = appendField(b, hEdge, f.edge)
	return appendField(b, hReqID, f.id)
}

// forwardedValues builds the values of the headers the policy adds,
// extending those the scan found, into b (returned grown).
func forwardedValues(b []byte, sc *h1Scan, client, edge netip.AddrPort, host []byte, tls bool, loopID, id string) (forwarded, []byte) {
	f := forwarded{proto: []byte("http"), host: host}
	if tls {
		f.proto = []byte("https")
	}
	start := len(b)
	b = joinList(b, sc.xff)
	b = client.Addr().AppendTo(b)
	xffEnd := len(b)

	b = joinList(b, sc.fwd)
	b = append(b, "for="...)
	b = appendNode(b, client.Addr())
	b = append(b, ";by="...)
	b = appendNode(b, edge.Addr())
	b = append(b, ";proto="...)
	b = append(b, f.proto...)
	if len(host) > 0 {
		b = append(b, ";host="...)
		b = append(b, quoteIfNeeded(string(host))...)
	}
	fwdEnd := len(b)

	b = joinList(b, sc.loop)
	b = append(b, loopID...)
	loopEnd := len(b)

	b = edge.AppendTo(b)
	b = append(b, id...)
	// Sliced once b is done growing.
	f.xff = b[start:xffEnd]
	f.fwd = b[xffEnd:fwdEnd]
	f.loop = b[fwdEnd:loopEnd]
	f.edge = b[loopEnd : len(b)-len(id)]
	f.id = b[len(b)-len(id):]
	return f, b
}

// rewriteRequest applies the forwarding policy: drops hop-by-hop headers and
// those we set, and appends X-Forwarded-For, X-Forwarded-Proto,
// X-Forwarded-Host, Forwarded, CDN-Loop, X-Edge-Addr and X-Request-Id.
func rewriteRequest(h *fasthttp.RequestHeader, sc *h1Scan, client, edge netip.AddrPort, host []byte, tls bool, loopID, id string) {
	bp := scratches.Get().(*[]byte)
	b := (*bp)[:0]
	defer func() { *bp = b; scratches.Put(bp) }()

	// Build the values before dropping the headers they extend: the scan
	// holds slices of them.
	var f forwarded
	f, b = forwardedValues(b, sc, client, edge, host, tls, loopID, id)
	if sc.drop {
		start := len(b)
		b = joinList(b, sc.conn)
		dropHeaders(h, b[start:], dropRequest)
	}
	h.AddBytesKV(hXFF, f.xff)
	h.AddBytesKV(hProto, f.proto)
	h.AddBytesKV(hHost, f.host)
	h.AddBytesKV(hFwd, f.fwd)
	h.AddBytesKV(hLoop, f.loop)
	h.AddBytesKV(hEdge, f.edge)
	h.AddBytesKV(hReqID, f.id)
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

// rewriteResponse drops the hop-by-hop headers of an origin's response,
// in any letter case, and sets X-Request-Id and Alt-Svc.
func rewriteResponse(h *fasthttp.ResponseHeader, id, altSvc string) {
	drop := false
	var conn [][]byte
	for k, v := range h.All() {
		switch {
		case sameName(k, hConn, false):
			conn = append(conn, v)
			drop = true
		case isOneOf(k, hopBytes), sameName(k, hReqID, false), sameName(k, hAltSvc, false), lookalike(k):
			drop = true
		}
	}
	if drop {
		var cb []byte
		if len(conn) > 0 {
			cb = joinList(nil, conn)
		}
		dropHeaders(h, cb, func(k []byte) bool {
			return isOneOf(k, hopBytes) || sameName(k, hReqID, false) || lookalike(k) ||
				altSvc != "" && sameName(k, hAltSvc, false)
		})
	}
	h.AddBytesKV(hReqID, []byte(id))
	if altSvc != "" {
		h.AddBytesKV(hAltSvc, []byte(altSvc))
	}
}
