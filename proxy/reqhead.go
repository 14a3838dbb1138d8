package proxy

import (
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// reqHead is an HTTP/2 or HTTP/3 request's field section being decoded
// straight into the fasthttp.Request for the origin. Both protocols carry
// the same fields under the same rules, and every field is checked before
// it is written into an HTTP/1.1 head (RFC 9113 8.2–8.3, RFC 9114 4.1.2,
// 4.2, 4.3, and check.go): pseudo-headers first, each once, no unknown
// one; names lower case, tokens; values without control bytes or outer
// whitespace (HTTP/1.1 would strip it, and the origin read another
// value); no connection-specific header, TE only "trailers"; one
// Content-Length; the authority host[:port] without credentials, a Host
// the same as it; the method a token, the path origin-form (and not
// crossing a route, checkPath).
type reqHead struct {
	size     int // the decoded list (RFC 9113 6.5.2, RFC 9114 4.2.2)
	tooLarge bool

	malformed string // why the request is malformed ("" when it is not)
	reason    string // the refusal reason it counts under, if any
	rf        *refusal

	method, path, scheme, authority, host string
	pseudo                                uint8 // pseudo-headers seen, one bit each
	regular                               bool  // a regular header came
	cl                                    int64 // Content-Length, -1 none
	expect                                bool  // Expect: 100-continue
	cookie                                []byte
	req                                   *fasthttp.Request

	// The regular fields for the origin, in order (Host, Cookie,
	// Content-Length, Expect and TE apart), names in net/http's canonical
	// form in names; sc is their scan for the forwarding policy. They go
	// into req (toRequest) only for the fasthttp path: the engine's
	// exchange writes them itself (appendStreamRequest).
	fields []reqField
	names  []byte
	sc     h1Scan
	// origin is the request's head for the origin as admitHead wrote it
	// for the engine's exchange (nil: the fasthttp path), from
	// originHeads.
	origin *reqOriginHead
}

// reqOriginHead is a request head written for the origin (appendOrigin).
type reqOriginHead struct {
	b           []byte
	contentType bool // the request has a Content-Type
}

// reqField is a regular field of a request head.
type reqField struct {
	name  []byte // in reqHead.names
	value string
}

// originHeads are the buffers of origin request heads.
var originHeads = sync.Pool{New: func() any { return &reqOriginHead{b: make([]byte, 0, 1024)} }}

const (
	pseudoMethod = 1 << iota
	pseudoPath
	pseudoScheme
	pseudoAuthority
)

// reset empties the head for the next request, keeping its buffers; the
// request goes back to its pool unless it was taken.
func (h *reqHead) reset() {
	if h.req != nil {
		fasthttp.ReleaseRequest(h.req)
	}
	if h.origin != nil {
		putOriginHead(h.origin)
	}
	clear(h.fields) // the values' strings
	sc := &h.sc
	*h = reqHead{cookie: h.cookie[:0], fields: h.fields[:0], names: h.names[:0],
		sc: h1Scan{xff: sc.xff[:0], fwd: sc.fwd[:0], loop: sc.loop[:0], conn: sc.conn[:0]}}
}

// putOriginHead gives an origin head's buffer back.
func putOriginHead(o *reqOriginHead) {
	if cap(o.b) <= 16<<10 {
		o.b, o.contentType = o.b[:0], false
		originHeads.Put(o)
	}
}

func (h *reqHead) setMalformed(why, reason string) {
	if h.malformed == "" {
		h.malformed, h.reason = why, reason
	}
}

// field takes one decoded field (of trailers: checked, not forwarded).
// The caller counts its size and skips it once the head is too large or
// malformed.
func (h *reqHead) field(name, v string, trailers bool) {
	if len(name) > 0 && name[0] == ':' {
		if trailers {
			h.setMalformed("a pseudo-header in trailers", "")
			return
		}
		if h.regular {
			h.setMalformed("a pseudo-header after a regular header", "")
			return
		}
		var bit uint8
		switch name {
		case ":method":
			bit, h.method = pseudoMethod, v
		case ":path":
			bit, h.path = pseudoPath, v
		case ":scheme":
			bit, h.scheme = pseudoScheme, v
		case ":authority":
			bit, h.authority = pseudoAuthority, v
		default:
			h.setMalformed("an unknown or response pseudo-header "+name, "")
			return
		}
		if h.pseudo&bit != 0 {
			h.setMalformed("a repeated "+name, "")
		}
		h.pseudo |= bit
		return
	}
	h.regular = true
	for i := 0; i < len(name); i++ {
		if ch := name[i]; ch >= 'A' && ch <= 'Z' {
			h.setMalformed("an upper-case header name", refuseHeaderName)
			return
		}
	}
	if h.rf != nil {
		return // refused already: only malformations still matter
	}
	if !isToken(name) {
		h.rf = bad(refuseHeaderName, "a header name is not a token")
		return
	}
	if !validValue(v) || len(v) > 0 && (isSpace(v[0]) || isSpace(v[len(v)-1])) {
		h.rf = bad(refuseHeaderVal, "a header value has a control byte or outer whitespace")
		return
	}
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		h.setMalformed("a connection-specific header", refuseConnHeader)
		return
	case "te":
		if v != "trailers" {
			h.setMalformed("TE other than trailers", refuseConnHeader)
		}
		return
	}
	if trailers {
		return // checked, not forwarded
	}
	switch name {
	case "content-length":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || v[0] == '+' || h.cl >= 0 && h.cl != n {
			h.setMalformed("a bad Content-Length", "")
			return
		}
		h.cl = n
	case "host":
		if h.host != "" {
			h.setMalformed("a repeated Host", refuseAuthority)
		}
		h.host = v
	case "expect":
		// The proxy reads the body itself: it says 100 Continue (once
		// the request is admitted), the origin gets the body without
		// asking.
		if !strings.EqualFold(v, "100-continue") {
			h.rf = &refusal{status: 417, reason: "", msg: "only Expect: 100-continue is understood"}
		}
		h.expect = true
	case "cookie":
		// RFC 9113 8.2.3, RFC 9114 4.2.1: crumbs are joined for HTTP/1.1.
		if len(h.cookie) > 0 {
			h.cookie = append(h.cookie, "; "...)
		}
		h.cookie = append(h.cookie, v...)
	default:
		// Names in net/http's canonical form, as origins saw them before.
		start := len(h.names)
		h.names = append(h.names, name...)
		nb := h.names[start:len(h.names):len(h.names)]
		upper := true
		for i, ch := range nb {
			if upper && ch >= 'a' && ch <= 'z' {
				nb[i] = ch - 'a' + 'A'
			}
			upper = ch == '-'
		}
		h.fields = append(h.fields, reqField{nb, v})
		h.sc.header(nb, unsafe.Slice(unsafe.StringData(v), len(v)))
	}
}

// check ends the decoding: malformed reports a stream error (the
// refusal's reason counted by the caller), else rf is the edge's answer
// to a refused request, or nil.
func (h *reqHead) check(noBody bool) (rf *refusal, malformed bool) {
	if h.malformed != "" {
		return nil, true
	}
	if h.pseudo&pseudoMethod == 0 {
		return nil, true
	}
	connect := h.method == "CONNECT"
	switch {
	case connect && h.pseudo&(pseudoPath|pseudoScheme) != 0,
		!connect && (h.pseudo&(pseudoPath|pseudoScheme) != pseudoPath|pseudoScheme || h.path == ""):
		return nil, true
	case noBody && h.cl > 0:
		return nil, true // a Content-Length and no DATA
	}
	if h.authority == "" {
		h.authority = h.host
	} else if h.host != "" && h.host != h.authority {
		h.reason = refuseAuthority
		return nil, true
	}
	if !connect {
		if rf := checkAuthority(h.authority); rf != nil {
			h.reason = rf.reason
			return nil, true
		}
	}
	rf = h.rf
	switch {
	case h.tooLarge:
		rf = &refusal{status: 431, reason: refuseHeadLarge, msg: "the request head is larger than the limit"}
	case connect:
		rf = &refusal{status: 405, reason: refuseConnect, msg: "CONNECT is not served here"}
	case !isToken(h.method):
		rf = bad(refuseMethod, "the method is not a token")
	case rf == nil:
		rf = checkTarget(h.method == "OPTIONS", h.path)
	}
	return rf, false
}

// toRequest completes the fasthttp request from the checked head: the
// pseudo-headers, the fields, the joined Cookie.
func (h *reqHead) toRequest() {
	req := h.req
	req.Header.SetMethod(h.method)
	req.SetRequestURI(h.path) // exactly what was checked and routed
	req.Header.SetHost(h.authority)
	req.UseHostHeader = true // the URI has no host to take it from
	for _, f := range h.fields {
		req.Header.AddBytesKV(f.name, unsafe.Slice(unsafe.StringData(f.value), len(f.value)))
	}
	if len(h.cookie) > 0 {
		req.Header.AddBytesKV([]byte("Cookie"), h.cookie)
	}
}

// appendOrigin writes the head for the origin as the fasthttp path's
// Request.Write would after the forwarding policy (rewriteRequest): the
// request line, Host (the authority), the fields less those the policy
// drops, Cookie, and the policy's own; without the framing and the final
// CRLF (appendStreamRequest adds them).
func (h *reqHead) appendOrigin(b []byte, f *forwarded) []byte {
	b = append(b, h.method...)
	b = append(b, ' ')
	b = append(b, h.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, h.authority...)
	b = append(b, "\r\n"...)
	for _, fl := range h.fields {
		if h.sc.drop && dropRequest(fl.name) {
			continue
		}
		b = append(b, fl.name...)
		b = append(b, ": "...)
		b = append(b, fl.value...)
		b = append(b, "\r\n"...)
	}
	if len(h.cookie) > 0 {
		b = appendField(b, hCookie, h.cookie)
	}
	return f.append(b)
}

// frame gives the request its method and its body's framing: none when
// the client's stream ended with the head, the Content-Length when there
// is one, else unknown (chunked to the origin).
func (h *reqHead) frame(ended bool) {
	h.req.Header.SetMethod(h.method)
	switch {
	case ended:
	case h.cl >= 0:
		h.req.Header.SetContentLength(int(h.cl))
	default:
		h.req.Header.SetContentLength(-1)
	}
}

// hasContentType reports whether the fields have a Content-Type.
func (h *reqHead) hasContentType() bool {
	for _, f := range h.fields {
		if sameName(f.name, hContentType, false) {
			return true
		}
	}
	return false
}

var hContentType = []byte("Content-Type")

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// appendRespFields appends resp's headers for an HTTP/2 or HTTP/3 client
// to b with field (the protocol's literal encoder): names in lower case
// (through *name), connection-specific headers dropped, and
// Content-Length (written in num's room) when the body's length is known
// (bodyLen >= 0). The caller encodes :status first.
func appendRespFields(b []byte, resp *fasthttp.Response, bodyLen int, name *[]byte, num []byte, field func(b, name, value []byte) []byte) []byte {
	for k, v := range resp.Header.All() {
		nb := (*name)[:0]
		for _, ch := range k {
			if ch >= 'A' && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			nb = append(nb, ch)
		}
		*name = nb
		switch string(nb) {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer":
			continue
		case "content-length":
			if bodyLen >= 0 {
				continue // ours follows
			}
		}
		b = field(b, nb, v)
	}
	if bodyLen >= 0 {
		b = field(b, fContentLength, strconv.AppendInt(num[:0], int64(bodyLen), 10))
	}
	return b
}
