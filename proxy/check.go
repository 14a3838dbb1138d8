package proxy

import (
	"bytes"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// What a request must be before it becomes an HTTP/1.1 head for an origin,
// whatever protocol it came in: one set of checks, so that the origin
// reads the request the proxy routed, and nothing a client wrote can add
// a line, a header or a route the proxy did not see.

// refusal is why a request is answered by the edge: a status, a reason
// (the label of edgeproxy_cdn_requests_refused_total, and the access log's
// refused field) and the error page's sentence.
type refusal struct {
	status int
	reason string
	msg    string
}

// The reasons, one series each.
const (
	refuseMethod     = "method"            // not a token
	refuseConnect    = "connect"           // CONNECT: the edge is no tunnel
	refuseVersion    = "version"           // not HTTP/1.0 or HTTP/1.1
	refuseHeaderName = "header_name"       // not a token
	refuseHeaderVal  = "header_value"      // CR, LF, NUL or another control byte; HTTP/2 and HTTP/3: outer whitespace
	refuseConnHeader = "connection_header" // HTTP/2 and HTTP/3: a connection-specific header
	refuseConnNames  = "connection_names"  // Connection names Content-Length, Transfer-Encoding or Host
	refuseAuthority  = "authority"         // not host[:port]
	refuseUserinfo   = "userinfo"          // user:pass@ in Host, :authority or the request target
	refuseTarget     = "target"            // not origin-form
	refusePath       = "path"              // an encoded slash, a backslash or a dot segment
	refuseHeadLarge  = "head_too_large"    // the HTTP/1.1 parser: the head is over max_header_bytes
	refuseTimeout    = "timeout"           // the HTTP/1.1 parser: the head did not arrive in time
	refuseMalformed  = "malformed"         // the HTTP/1.1 parser refused the head
)

var refusalReasons = []string{
	refuseMethod, refuseConnect, refuseVersion, refuseHeaderName, refuseHeaderVal, refuseConnHeader,
	refuseConnNames, refuseAuthority, refuseUserinfo, refuseTarget, refusePath, refuseHeadLarge,
	refuseTimeout, refuseMalformed,
}

func bad(reason, msg string) *refusal { return &refusal{status: 400, reason: reason, msg: msg} }

// tchar is RFC 9110's token character set.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken[S ~string | ~[]byte](s S) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tchar[s[i]] {
			return false
		}
	}
	return true
}

// validValue reports whether a field value is free of control bytes (CR,
// LF, NUL and the rest; HTAB is allowed) and DEL.
func validValue[S ~string | ~[]byte](v S) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// regName is what a host name or an IPv4 address may hold (RFC 3986
// reg-name: unreserved and sub-delims; no percent escapes).
var regName = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~!$&'()*+,;=" {
		t[c] = true
	}
	return t
}()

// checkAuthority checks a Host or :authority: host[:port], the host a
// name, an IPv4 address or a bracketed IPv6 literal, no userinfo. Every
// request needs one (an origin cannot be asked without).
func checkAuthority[S ~string | ~[]byte](a S) *refusal {
	if len(a) == 0 {
		return bad(refuseAuthority, "the request has no host")
	}
	for i := 0; i < len(a); i++ {
		if a[i] == '@' {
			return bad(refuseUserinfo, "the host carries credentials (user:password@)")
		}
	}
	host, port := a, a[:0]
	if a[0] == '[' {
		end := -1
		for i := 0; i < len(a); i++ {
			if a[i] == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return bad(refuseAuthority, "the host is not host[:port]")
		}
		if ip, err := netip.ParseAddr(string(a[1:end])); err != nil || !ip.Is6() || ip.Zone() != "" {
			return bad(refuseAuthority, "the host is not host[:port]")
		}
		host, port = a[:end+1], a[end+1:]
		if len(port) > 0 && port[0] != ':' {
			return bad(refuseAuthority, "the host is not host[:port]")
		}
	} else {
		for i := 0; i < len(a); i++ {
			if a[i] == ':' {
				host, port = a[:i], a[i:]
				break
			}
			if !regName[a[i]] {
				return bad(refuseAuthority, "the host is not host[:port]")
			}
		}
	}
	if len(host) == 0 {
		return bad(refuseAuthority, "the host is not host[:port]")
	}
	if len(port) > 0 {
		port = port[1:]
		if len(port) > 5 {
			return bad(refuseAuthority, "the host is not host[:port]")
		}
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return bad(refuseAuthority, "the host is not host[:port]")
			}
		}
	}
	return nil
}

// checkTarget checks an origin-form request target (path and query):
// it starts with '/', has no space, control byte, DEL or '#', and its path
// passes checkPath. OPTIONS (options) may ask for "*".
func checkTarget[S ~string | ~[]byte](options bool, t S) *refusal {
	if len(t) == 1 && t[0] == '*' && options {
		return nil
	}
	if len(t) == 0 || t[0] != '/' {
		return bad(refuseTarget, "the request target is not a path (origin-form)")
	}
	end := len(t)
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c <= ' ' || c == 0x7f || c == '#' {
			return bad(refuseTarget, "the request target has a space, a control byte or a fragment")
		}
		if c == '?' && end == len(t) {
			end = i
		}
	}
	return checkPath(t[:end])
}

// checkPath refuses what would let the origin read a path other than the
// one routed: routes match the decoded path with dot segments resolved,
// the origin gets the path as sent, and an origin may decode %2F or %5C
// into a separator, treat '\' as one, or resolve "..;" as "..". Such a
// path crosses the route boundary, so it is refused.
func checkPath[S ~string | ~[]byte](p S) *refusal {
	seg := 0 // start of the current segment
	for i := 0; i <= len(p); i++ {
		if i < len(p) {
			switch c := p[i]; c {
			case '\\':
				return bad(refusePath, "the path has a backslash")
			case '%':
				if i+2 >= len(p) || unhex(p[i+1]) > 15 || unhex(p[i+2]) > 15 {
					return bad(refusePath, "the path has a malformed percent escape")
				}
				switch unhex(p[i+1])<<4 | unhex(p[i+2]) {
				case '/', '\\':
					return bad(refusePath, "the path has an encoded slash (%2F or %5C)")
				}
				continue
			case '/':
			default:
				continue
			}
		}
		if dotSegment(p[seg:i]) {
			return bad(refusePath, "the path has a dot segment (. or ..)")
		}
		seg = i + 1
	}
	return nil
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c|0x20 >= 'a' && c|0x20 <= 'f':
		return c | 0x20 - 'a' + 10
	}
	return 0xff
}

// dotSegment reports whether a path segment is "." or "..", raw or with
// %2E, before any ";" parameters.
func dotSegment[S ~string | ~[]byte](s S) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '.':
			dots++
		case s[i] == '%' && i+2 < len(s) && s[i+1] == '2' && s[i+2]|0x20 == 'e':
			dots++
			i += 2
		case s[i] == ';':
			return dots == 1 || dots == 2
		default:
			return false
		}
	}
	return dots == 1 || dots == 2
}

// checkH1 checks an HTTP/1.1 request fasthttp parsed: what its parser
// lets through and an origin must not get.
func checkH1(req *fasthttp.Request) *refusal {
	h := &req.Header
	if p := h.Protocol(); !bytes.Equal(p, []byte("HTTP/1.1")) && !bytes.Equal(p, []byte("HTTP/1.0")) {
		return bad(refuseVersion, "the HTTP version is not 1.0 or 1.1")
	}
	if h.IsConnect() {
		return &refusal{status: 405, reason: refuseConnect, msg: "CONNECT is not served here"}
	}
	if !isToken(h.Method()) {
		return bad(refuseMethod, "the method is not a token")
	}
	if host := h.Host(); len(host) > 0 || len(req.Host()) == 0 {
		if r := checkAuthority(host); r != nil {
			return r
		}
	} // else: an absolute target names the host, checked below
	for k, v := range h.All() {
		if !isToken(k) {
			return bad(refuseHeaderName, "a header name is not a token")
		}
		if !validValue(v) {
			return bad(refuseHeaderVal, "a header value has a control byte")
		}
		if sameName(k, hConn, false) {
			for _, f := range framingBytes {
				if connNamesFraming(v, f) {
					return bad(refuseConnNames, "Connection names "+string(f))
				}
			}
		}
	}
	target := h.RequestURI()
	if len(target) > 0 && target[0] != '/' && target[0] != '*' {
		// absolute-form: the origin gets the path; the authority must be a
		// host, without credentials
		u := req.URI()
		if len(u.Username()) > 0 || len(u.Password()) > 0 {
			return bad(refuseUserinfo, "the request target carries credentials (user:password@)")
		}
		if r := checkAuthority(u.Host()); r != nil {
			return r
		}
		return checkPath(u.PathOriginal())
	}
	return checkTarget(bytes.Equal(h.Method(), []byte("OPTIONS")), target)
}

// connNamesFraming reports whether a Connection value names f, a framing
// header (which connNames never reports).
func connNamesFraming(conn, f []byte) bool {
	for len(conn) > 0 {
		var t []byte
		t, conn, _ = bytes.Cut(conn, []byte{','})
		if t = bytes.TrimSpace(t); sameName(t, f, false) {
			return true
		}
	}
	return false
}
