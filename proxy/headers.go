package proxy

import (
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The forwarding policy, shared by the HTTP/1.1 engine (fasthttp) and the
// HTTP/2 and HTTP/3 one (net/http): which headers are hop-by-hop, and what
// the origin learns about the client and the edge.

// hopHeaders are removed on the way in both directions (RFC 9110 7.6.1),
// with whatever the Connection header lists.
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
}

// connectionTokens returns the header names a Connection header lists.
func connectionTokens(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// forwarded is what the proxy adds to a request for the origin.
type forwarded struct {
	xff      string // X-Forwarded-For, the client appended
	proto    string // X-Forwarded-Proto
	host     string // X-Forwarded-Host
	elem     string // Forwarded, an element appended (RFC 7239)
	loop     string // CDN-Loop, our id appended (RFC 8586)
	edge     string // X-Edge-Addr: the address and port the client dialled
	clientIP string
}

func newForwarded(prevXFF, prevForwarded, prevLoop []string, client, edge netip.AddrPort, host string, tls bool, loopID string) forwarded {
	proto := "http"
	if tls {
		proto = "https"
	}
	ip := client.Addr().String()
	elem := "for=" + nodeName(client.Addr()) + ";by=" + nodeName(edge.Addr()) + ";proto=" + proto
	if host != "" {
		elem += ";host=" + quoteIfNeeded(host)
	}
	return forwarded{
		xff:      appendList(prevXFF, ip),
		proto:    proto,
		host:     host,
		elem:     appendList(prevForwarded, elem),
		loop:     appendList(prevLoop, loopID),
		edge:     edge.String(),
		clientIP: ip,
	}
}

func appendList(prev []string, v string) string {
	if len(prev) == 0 {
		return v
	}
	return strings.Join(prev, ", ") + ", " + v
}

// nodeName is a Forwarded node: IPv6 quoted and bracketed.
func nodeName(a netip.Addr) string {
	if a.Is6() {
		return `"[` + a.String() + `]"`
	}
	return a.String()
}

func quoteIfNeeded(s string) string {
	for _, c := range s {
		if !(c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return strconv.Quote(s)
		}
	}
	return s
}

// loopDetected reports whether CDN-Loop values already name us.
func loopDetected(values []string, id string) bool {
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			if i := strings.IndexByte(f, ';'); i >= 0 {
				f = strings.TrimSpace(f[:i])
			}
			if strings.EqualFold(f, id) {
				return true
			}
		}
	}
	return false
}

// requestIDs makes request ids: 16 hex characters, unique in the process
// and unlikely to repeat across processes (a random start).
type requestIDs struct{ n atomic.Uint64 }

func newRequestIDs() *requestIDs {
	r := &requestIDs{}
	r.n.Store(uint64(time.Now().UnixNano()) << 8)
	return r
}

func (r *requestIDs) next() string {
	v := r.n.Add(1) * 0x9E3779B97F4A7C15 // spread consecutive ids
	var b [16]byte
	const hex = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = hex[v&15]
		v >>= 4
	}
	return string(b[:])
}
