package proxy

import (
	"bytes"
	"strconv"
	"sync/atomic"
	"time"
)

// The heads of the HTTP/1.1 engine (h1conn.go): a request head parsed in
// one pass over the bytes it arrived in, and written for the origin in one
// more (the forwarding policy applied as it is copied); an origin's
// response head parsed and rewritten for the client the same way.
//
// The engine's parser is strict: it takes only what it can forward
// exactly as the fasthttp path would, and reports anything else (another
// version, a body, an Upgrade, obsolete line folding, a header the checks
// refuse) as not its own, for the fasthttp path to serve or refuse.

// h1MaxFields is the most header fields a request on the engine's path
// may have; more go the fasthttp path.
const h1MaxFields = 64

// h1Head is a request head, its slices into the bytes it was parsed from.
type h1Head struct {
	method, target, host []byte
	names, values        [h1MaxFields][]byte
	n                    int
	close                bool // Connection: close
	sc                   h1Scan
}

// reset empties h, keeping the scan's slices for their capacity.
func (h *h1Head) reset() {
	sc := &h.sc
	*sc = h1Scan{xff: sc.xff[:0], fwd: sc.fwd[:0], loop: sc.loop[:0], conn: sc.conn[:0]}
	h.method, h.target, h.host, h.n, h.close = nil, nil, nil, 0, false
}

var (
	hContentLength = []byte("Content-Length")
	hHostName      = []byte("Host")
	hExpect        = []byte("Expect")
	hCookie        = []byte("Cookie")
	hServer        = []byte("Server")
	hDate          = []byte("Date")
	http11         = []byte("HTTP/1.1")
)

// parseHead parses a request head (b ends with its empty line) into h. It
// reports false for a head that is not the engine's: anything but a GET
// or HEAD of HTTP/1.1 in origin-form without a body, one Host and at most
// one Cookie, each line ending in CRLF, every check of check.go passed.
func parseHead(b []byte, h *h1Head) bool {
	h.reset()
	line, rest, ok := cutLine(b)
	if !ok {
		return false
	}
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return false
	}
	h.method, line = line[:sp], line[sp+1:]
	if string(h.method) != "GET" && string(h.method) != "HEAD" {
		return false
	}
	sp = bytes.IndexByte(line, ' ')
	if sp < 0 || !bytes.Equal(line[sp+1:], http11) {
		return false
	}
	h.target = line[:sp]
	if checkTarget(false, h.target) != nil {
		return false
	}
	cookies := 0
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return false
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || h.n == h1MaxFields {
			return false // obsolete folding starts with a space: not a token either
		}
		k, v := line[:colon], trimOWS(line[colon+1:])
		if !isToken(k) || !validValue(v) {
			return false
		}
		switch {
		case sameName(k, hHostName, false):
			if h.host != nil {
				return false
			}
			h.host = v
		case sameName(k, hContentLength, false), sameName(k, hTE, false), sameName(k, hExpect, false),
			sameName(k, hUpgrade, false):
			return false
		case sameName(k, hCookie, false):
			if cookies++; cookies > 1 {
				return false // fasthttp joins them: the fasthttp path does
			}
		case sameName(k, hConn, false):
			for _, f := range framingBytes {
				if connNamesFraming(v, f) {
					return false
				}
			}
			if hasToken(v, "close") {
				h.close = true
			}
		}
		h.sc.header(k, v)
		h.names[h.n], h.values[h.n] = k, v
		h.n++
	}
	return len(rest) == 0 && h.host != nil && checkAuthority(h.host) == nil
}

// cutLine cuts the line ending in CRLF at the start of b.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// headEnd returns the length of the head at the start of b (through its
// empty line), or -1 while it is incomplete; from is where to resume.
func headEnd(b []byte, from int) int {
	if from > 3 {
		from -= 3
	} else {
		from = 0
	}
	if i := bytes.Index(b[from:], []byte("\r\n\r\n")); i >= 0 {
		return from + i + 4
	}
	return -1
}

func hasUpper(b []byte) bool {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

// lowerASCII lower-cases b in place: a host, as fasthttp gives it to the
// origin and X-Forwarded-Host.
func lowerASCII(b []byte) []byte {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return b
}

// appendOriginRequest writes h for the origin: the request line, Host,
// the client's headers less those the policy drops, and the policy's own;
// without the final CRLF (the caller may add Connection: close first).
func appendOriginRequest(b []byte, h *h1Head, host []byte, f *forwarded, conn []byte) []byte {
	b = append(b, h.method...)
	b = append(b, ' ')
	b = append(b, h.target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	for i := range h.n {
		k := h.names[i]
		if sameName(k, hHostName, false) || h.sc.drop && (dropRequest(k) || len(conn) > 0 && connNames(conn, k)) {
			continue
		}
		b = appendField(b, k, h.values[i])
	}
	return f.append(b)
}

func appendField(b, k, v []byte) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}

// h1Resp is an origin's response head.
type h1Resp struct {
	status   int
	reason   []byte
	http10   bool
	cl       int64 // -1: none
	chunked  bool
	close    bool // the origin closes the connection after it
	server   []byte
	names    [h1MaxFields * 2][]byte
	values   [h1MaxFields * 2][]byte
	n        int
	conn     []byte // Connection values, joined
	connBuf  []byte
	dropSome bool
}

// errOriginHead is an origin response head the engine cannot read.
type errOriginHead struct{ why string }

func (e *errOriginHead) Error() string { return "the origin's response head: " + e.why }

// parseResp parses an origin's response head (b ends with its empty line).
// Lines may end in a bare LF, as fasthttp's client takes them.
func parseResp(b []byte, r *h1Resp) error {
	// Field by field: the arrays are kilobytes, copied by a composite
	// literal.
	r.status, r.reason, r.http10, r.cl, r.chunked, r.close, r.server = 0, nil, false, -1, false, false, nil
	r.n, r.conn, r.connBuf, r.dropSome = 0, nil, r.connBuf[:0], false
	line, rest := cutLenient(b)
	switch {
	case bytes.HasPrefix(line, []byte("HTTP/1.1 ")):
	case bytes.HasPrefix(line, []byte("HTTP/1.0 ")):
		r.http10, r.close = true, true
	default:
		return &errOriginHead{"not HTTP/1.x"}
	}
	line = line[len("HTTP/1.1 "):]
	if len(line) < 3 || len(line) > 3 && line[3] != ' ' {
		return &errOriginHead{"no status code"}
	}
	code, ok := digits(line[:3])
	if !ok || code < 100 {
		return &errOriginHead{"no status code"}
	}
	r.status = int(code)
	if len(line) > 4 {
		r.reason = line[4:]
		if !validValue(r.reason) {
			return &errOriginHead{"a control byte in the reason phrase"}
		}
	}
	for {
		line, rest = cutLenient(rest)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || r.n == len(r.names) {
			return &errOriginHead{"a malformed or surplus header line"}
		}
		k, v := line[:colon], trimOWS(line[colon+1:])
		if !isToken(k) || !validValue(v) {
			return &errOriginHead{"a malformed header line"}
		}
		switch {
		case sameName(k, hContentLength, false):
			n, ok := digits(v)
			if !ok || r.cl >= 0 && r.cl != n {
				return &errOriginHead{"a bad Content-Length"}
			}
			r.cl = n
			continue
		case sameName(k, hTE, false):
			if !bytes.EqualFold(v, []byte("chunked")) || r.chunked {
				return &errOriginHead{"a Transfer-Encoding other than chunked"}
			}
			r.chunked = true
			continue
		case sameName(k, hConn, false):
			r.connBuf = append(append(r.connBuf, v...), ", "...)
			if hasToken(v, "close") {
				r.close = true
			} else if r.http10 && hasToken(v, "keep-alive") {
				r.close = false
			}
			r.dropSome = true
			continue
		case sameName(k, hServer, false):
			r.server = v
			continue
		case sameName(k, hDate, false):
			continue // ours
		case isOneOf(k, hopBytes), sameName(k, hReqID, false), sameName(k, hAltSvc, false), lookalike(k):
			r.dropSome = true
		}
		r.names[r.n], r.values[r.n] = k, v
		r.n++
	}
	if r.chunked && r.cl >= 0 {
		return &errOriginHead{"both Content-Length and Transfer-Encoding"}
	}
	r.conn = r.connBuf
	return nil
}

// digits parses a decimal number of 1 to 18 digits, nothing else.
func digits(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func cutLenient(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, rest
}

// respHeadEnd is headEnd for a response head whose lines may end in a
// bare LF.
func respHeadEnd(b []byte, from int) int {
	if from > 3 {
		from -= 3
	} else {
		from = 0
	}
	for i := from; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			return i + 2
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 3
		}
	}
	return -1
}

// bodyless reports whether a response to method with status has no body.
func bodyless(head bool, status int) bool {
	return head || status == 204 || status == 304 || status < 200
}

// appendClientHead writes r's head for the client: the status line,
// Server (the origin's, else edgeproxy's), the edge's Date, the origin's
// headers less the hop-by-hop ones and those the edge sets, the framing
// the engine sends the body in (length: the body's, or -1 for chunked;
// -2 for none), X-Request-Id, Alt-Svc and Connection: close when the
// client's connection ends after it.
func appendClientHead(b []byte, r *h1Resp, length int64, id, altSvc string, closing bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(r.status), 10)
	b = append(b, ' ')
	if len(r.reason) > 0 {
		b = append(b, r.reason...)
	} else {
		b = append(b, statusText(r.status)...)
	}
	b = append(b, "\r\n"...)
	if r.server != nil {
		b = appendField(b, hServer, r.server)
	} else {
		b = append(b, "Server: edgeproxy\r\n"...)
	}
	b = append(b, dateLine()...)
	for i := range r.n {
		k := r.names[i]
		if r.dropSome && (isOneOf(k, hopBytes) || sameName(k, hReqID, false) || lookalike(k) ||
			altSvc != "" && sameName(k, hAltSvc, false) || len(r.conn) > 0 && connNames(r.conn, k)) {
			continue
		}
		b = appendField(b, k, r.values[i])
	}
	switch {
	case length >= 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, length, 10)
		b = append(b, "\r\n"...)
	case length == -1:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	b = append(b, "X-Request-Id: "...)
	b = append(b, id...)
	b = append(b, "\r\n"...)
	if altSvc != "" {
		b = append(b, "Alt-Svc: "...)
		b = append(b, altSvc...)
		b = append(b, "\r\n"...)
	}
	if closing {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// dateLine is the Date header line of the current second.
func dateLine() []byte {
	sec := coarseNanos() / int64(time.Second)
	if d := dates.Load(); d != nil && d.sec == sec {
		return d.line
	}
	d := &dateCache{sec: sec}
	d.line = time.Unix(sec, 0).UTC().AppendFormat([]byte("Date: "), time.RFC1123)
	d.line = append(bytes.Replace(d.line, []byte("UTC"), []byte("GMT"), 1), "\r\n"...)
	dates.Store(d)
	return d.line
}

type dateCache struct {
	sec  int64
	line []byte
}

var dates atomic.Pointer[dateCache]

// hasToken reports whether a comma-separated value has tok, in any letter
// case.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var f []byte
		f, v, _ = bytes.Cut(v, []byte{','})
		if bytes.EqualFold(trimOWS(f), []byte(tok)) {
			return true
		}
	}
	return false
}
