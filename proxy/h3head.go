package proxy

import (
	"net/http"
	"strings"

	"github.com/valyala/fasthttp"
)

// connectionSpecific are the headers HTTP/2 and HTTP/3 forbid (RFC 9113
// 8.2.2, RFC 9114 4.2): a request with one is malformed. TE is allowed
// with the value "trailers" only.
var connectionSpecific = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

// convertStd turns an HTTP/3 request into the HTTP/1.1 request
// for the origin. Every field is checked before it is written into an
// HTTP/1.1 head: the method a token, the path origin-form (and not
// crossing a route, checkPath), the authority host[:port] without
// credentials, header names tokens and values without control bytes or
// outer whitespace (HTTP/1.1 would strip it, and the origin read another
// value). A refused request gets its refusal; the caller answers it.
func convertStd(r *http.Request, req *fasthttp.Request) *refusal {
	if r.Method == http.MethodConnect {
		return &refusal{status: 405, reason: refuseConnect, msg: "CONNECT is not served here"}
	}
	if !isToken(r.Method) {
		return bad(refuseMethod, "the method is not a token")
	}
	target := r.RequestURI // :path as the client sent it
	if target == "" {
		target = r.URL.RequestURI()
	}
	if rf := checkTarget(r.Method == http.MethodOptions, target); rf != nil {
		return rf
	}
	if rf := checkAuthority(r.Host); rf != nil {
		return rf
	}
	for name, vs := range r.Header {
		if !isToken(name) {
			return bad(refuseHeaderName, "a header name is not a token")
		}
		for _, v := range vs {
			if !validValue(v) || len(v) > 0 && (isSpace(v[0]) || isSpace(v[len(v)-1])) {
				return bad(refuseHeaderVal, "a header value has a control byte or outer whitespace")
			}
		}
		for _, c := range connectionSpecific {
			if strings.EqualFold(name, c) {
				return bad(refuseConnHeader, "HTTP/2 and HTTP/3 have no "+c+" header")
			}
		}
		if strings.EqualFold(name, "TE") && (len(vs) != 1 || !strings.EqualFold(vs[0], "trailers")) {
			return bad(refuseConnHeader, "TE other than trailers")
		}
	}

	req.Header.DisableNormalizing()
	req.Header.SetMethod(r.Method)
	req.SetRequestURI(target) // exactly what was checked and routed
	req.Header.SetHost(r.Host)
	req.UseHostHeader = true // the URI has no host to take it from
	for name, vs := range r.Header {
		if name == "Host" || name == "Content-Length" {
			continue
		}
		for _, v := range vs {
			req.Header.Add(name, v)
		}
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }
