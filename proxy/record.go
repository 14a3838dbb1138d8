package proxy

import (
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// record is one request, for the access log and the metrics.
type record struct {
	start              time.Time
	id, proto          string
	edge, client       netip.AddrPort
	method, host, path string
	site, upstream     string
	status             int
	bytes              int64
	refused            string // why the edge refused it (check.go's reasons), or ""
}

// done ends a request: metrics and an access log line.
func (p *Proxy) done(r *record) {
	d := time.Since(r.start)
	site := r.site
	if site == "" {
		site = "-"
	}
	p.m.request(site, r.status, r.proto, d)
	a := p.access.cur.Load()
	if a == nil {
		return
	}
	// One clock read per request: the end is the start plus the duration.
	a.log(r, r.start.Add(d), d)
}

// errorPage is the body of a response the proxy makes itself.
func errorPage(status int, id, msg string) []byte {
	return fmt.Appendf(nil, "%d %s\n\n%s.\n\nrequest id: %s\n", status, statusText(status), msg, id)
}

func statusText(status int) string {
	switch status {
	case 421:
		return "Misdirected Request"
	case 508:
		return "Loop Detected"
	}
	return http.StatusText(status)
}
