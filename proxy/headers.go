package proxy

import (
	"strconv"
	"sync/atomic"
	"time"
)

// hopHeaders are removed on the way in both directions (RFC 9110 7.6.1),
// with whatever the Connection header lists. The forwarding policy that
// uses them is policy.go's, for every client protocol.
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
}

// quoteIfNeeded quotes a Forwarded value that is not a token.
func quoteIfNeeded(s string) string {
	for _, c := range s {
		if !(c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return strconv.Quote(s)
		}
	}
	return s
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
