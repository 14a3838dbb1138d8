package proxy

import (
	"context"
	"fmt"
	"log/slog"
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
	if p.access == nil {
		return
	}
	attrs := [...]slog.Attr{
		slog.String("request_id", r.id),
		slog.String("site", r.site),
		slog.String("edge", r.edge.String()),
		slog.String("client", r.client.String()),
		slog.String("protocol", r.proto),
		slog.String("method", r.method),
		slog.String("host", r.host),
		slog.String("path", r.path),
		slog.Int("status", r.status),
		slog.Int64("bytes", r.bytes),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("upstream", r.upstream),
		slog.String("refused", r.refused), // only when the edge refused it
	}
	n := len(attrs)
	if r.refused == "" {
		n--
	}
	p.access.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs[:n]...)
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
