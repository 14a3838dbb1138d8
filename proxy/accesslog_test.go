package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// lockedBuffer is a writer the test reads while the log writes.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) Writes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writes
}

// accessLine is a decoded line.
type accessLine struct {
	Time      string   `json:"time"`
	Level     string   `json:"level"`
	Msg       string   `json:"msg"`
	Log       string   `json:"log"`
	Node      *string  `json:"node"`
	RequestID string   `json:"request_id"`
	Site      string   `json:"site"`
	Edge      string   `json:"edge"`
	Client    string   `json:"client"`
	Protocol  string   `json:"protocol"`
	Method    string   `json:"method"`
	Host      string   `json:"host"`
	Path      string   `json:"path"`
	Status    int      `json:"status"`
	Bytes     int64    `json:"bytes"`
	DurationS *float64 `json:"duration_s"`
	Upstream  string   `json:"upstream"`
	Refused   *string  `json:"refused"`
}

// decodeLine decodes one line strictly: valid JSON, known keys only.
func decodeLine(t testing.TB, line []byte) accessLine {
	t.Helper()
	if !json.Valid(line) {
		t.Fatalf("not JSON: %q", line)
	}
	var l accessLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		t.Fatalf("decode %q: %v", line, err)
	}
	return l
}

// keys returns a line's keys in order.
func keys(t testing.TB, line []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	var ks []string
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k.(string))
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return ks
}

func testRecord() *record {
	return &record{
		id: "0123456789abcdef", proto: "HTTP/1.1",
		edge:   netip.MustParseAddrPort("192.0.2.10:443"),
		client: netip.MustParseAddrPort("[2001:db8::7]:40000"),
		method: "GET", host: "www.example.com", path: "/static/app.js",
		site: "example", upstream: "http://192.0.2.20:8080", status: 200, bytes: 12345,
	}
}

func lines(s string) []string {
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func TestAccessLogLine(t *testing.T) {
	var out lockedBuffer
	a := NewAccessLog(&out, "edge-1")
	at := time.Date(2026, 12, 1, 11, 45, 26, 987654321, time.UTC)
	a.log(testRecord(), at, 1234567*time.Microsecond+999*time.Nanosecond)
	r := testRecord()
	r.status, r.bytes, r.refused, r.site, r.upstream = 421, 0, "unknown_host", "", ""
	a.log(r, at.Add(13*time.Millisecond), 3*time.Microsecond)
	a.Close()

	ls := lines(out.String())
	if len(ls) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(ls), out.String())
	}
	want := []string{"time", "level", "msg", "log", "node", "request_id", "site", "edge", "client", "protocol",
		"method", "host", "path", "status", "bytes", "duration_s", "upstream"}
	if got := keys(t, []byte(ls[0])); !slicesEqual(got, want) {
		t.Errorf("keys %v, want %v", got, want)
	}
	if got := keys(t, []byte(ls[1])); !slicesEqual(got, append(want, "refused")) {
		t.Errorf("keys of a refused request %v, want refused last", got)
	}
	l := decodeLine(t, []byte(ls[0]))
	if l.Time != "2026-12-01T11:45:26.987Z" {
		t.Errorf("time %q, want 2026-12-01T11:45:26.987Z", l.Time)
	}
	if l.Level != "INFO" || l.Msg != "access" || l.Log != "access" || l.Node == nil || *l.Node != "edge-1" {
		t.Errorf("level/msg/log/node: %+v", l)
	}
	if l.RequestID != "0123456789abcdef" || l.Site != "example" || l.Edge != "192.0.2.10:443" ||
		l.Client != "[2001:db8::7]:40000" || l.Protocol != "HTTP/1.1" || l.Method != "GET" ||
		l.Host != "www.example.com" || l.Path != "/static/app.js" || l.Upstream != "http://192.0.2.20:8080" {
		t.Errorf("fields: %+v", l)
	}
	if l.Status != 200 || l.Bytes != 12345 || l.DurationS == nil || *l.DurationS != 1.234567 || l.Refused != nil {
		t.Errorf("status %d bytes %d duration_s %v refused %v", l.Status, l.Bytes, l.DurationS, l.Refused)
	}
	l = decodeLine(t, []byte(ls[1]))
	if l.Status != 421 || l.Bytes != 0 || *l.DurationS != 0.000003 || l.Refused == nil || *l.Refused != "unknown_host" ||
		l.Time != "2026-12-01T11:45:27.000Z" {
		t.Errorf("refused line: %+v", l)
	}

	// No node, a zone east of UTC, the zero address.
	out = lockedBuffer{}
	a = NewAccessLog(&out, "")
	r = testRecord()
	r.edge = netip.AddrPort{}
	a.log(r, time.Date(2026, 6, 1, 8, 0, 0, 5e6, time.FixedZone("", 2*3600)), 0)
	a.Close()
	l = decodeLine(t, bytes.TrimSuffix([]byte(out.String()), []byte("\n")))
	if l.Node != nil || l.Time != "2026-06-01T08:00:00.005+02:00" || l.Edge != "" || *l.DurationS != 0 {
		t.Errorf("no node, +02:00, zero edge: %+v (node %v)", l, l.Node)
	}
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

// TestAccessLogTime checks the per-second cache against time.Format over
// second boundaries, out of order, and in the local zone.
func TestAccessLogTime(t *testing.T) {
	a := NewAccessLog(io.Discard, "")
	defer a.Close()
	base := time.Now()
	for _, off := range []time.Duration{0, 999 * time.Millisecond, time.Second, 10 * time.Millisecond, 3 * time.Second, -time.Second, 24 * time.Hour} {
		tt := base.Add(off)
		got := string(a.appendTime(nil, tt))
		want := tt.Format("2006-01-02T15:04:05.000Z07:00")
		if got != want {
			t.Errorf("%v: %q, want %q", tt, got, want)
		}
		if _, err := time.Parse(time.RFC3339Nano, got); err != nil {
			t.Errorf("%q is not RFC 3339: %v", got, err)
		}
	}
}

// TestAccessLogLikeSlog decodes a line and the slog JSON line of the same
// request: the same keys and values but the time's precision.
func TestAccessLogLikeSlog(t *testing.T) {
	r := testRecord()
	r.host = "h\"o\\st\x00\x1f\x7f\xff\xfe é \u2028 \u2029"
	r.path = "/a\tb\nc\rd\x01<>&" + string([]byte{0xed, 0xa0, 0x80}) + "\xc3"
	r.refused = "bad_header"
	d := 2500 * time.Microsecond

	var sb bytes.Buffer
	attrs := []slog.Attr{
		slog.String("request_id", r.id), slog.String("site", r.site),
		slog.String("edge", r.edge.String()), slog.String("client", r.client.String()),
		slog.String("protocol", r.proto), slog.String("method", r.method),
		slog.String("host", r.host), slog.String("path", r.path),
		slog.Int("status", r.status), slog.Int64("bytes", r.bytes),
		slog.Float64("duration_s", d.Seconds()),
		slog.String("upstream", r.upstream), slog.String("refused", r.refused),
	}
	slog.New(slog.NewJSONHandler(&sb, nil)).With("log", "access").With("node", "n").
		LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)

	var out lockedBuffer
	a := NewAccessLog(&out, "n")
	a.log(r, time.Now(), d)
	a.Close()

	var old, cur map[string]any
	if err := json.Unmarshal(sb.Bytes(), &old); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out.String()), &cur); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if old["duration_s"] != 0.0025 || cur["duration_s"] != 0.0025 {
		t.Errorf("duration_s %v, ours %v", old["duration_s"], cur["duration_s"])
	}
	for _, m := range []map[string]any{old, cur} {
		delete(m, "time")
	}
	if fmt.Sprint(old) != fmt.Sprint(cur) {
		t.Errorf("slog decoded:\n%v\nours decoded:\n%v", old, cur)
	}
	if ko, kc := keys(t, sb.Bytes()), keys(t, []byte(out.String())); strings.Join(ko, ",") != strings.Join(kc, ",") {
		t.Errorf("slog keys %v, ours %v", ko, kc)
	}
}

// TestHostileAccessLogEscaping logs hostile hosts and paths: every line stays one
// line of valid JSON that decodes to the text (invalid UTF-8 as U+FFFD).
func TestHostileAccessLogEscaping(t *testing.T) {
	var all []byte
	for c := range 256 {
		all = append(all, byte(c))
	}
	long := strings.Repeat("/\x00\"\\\xff\u2028é", 8<<10/12) // 8 KiB of the worst
	cases := map[string]string{
		"every byte":   string(all),
		"quotes":       `"},"status":999,"x":"`,
		"backslashes":  `\\\"\u0000\`,
		"newlines":     "a\nb\r\n{\"time\":1}\n",
		"invalid utf8": "\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\xf8\xa1\xa1\xa1\xa1\xed\xa0\x80",
		"truncated":    "é"[:1],
		"8 KiB":        long,
		"8 KiB plain":  "/" + strings.Repeat("a", 8<<10),
		"separators":   "\u2028\u2029\u0085",
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			var out lockedBuffer
			a := NewAccessLog(&out, s)
			r := testRecord()
			r.host, r.path, r.method, r.refused = s, s, s, s
			a.log(r, time.Now(), time.Millisecond)
			a.Close()
			text := out.String()
			if strings.Count(text, "\n") != 1 || !strings.HasSuffix(text, "}\n") {
				t.Fatalf("not one line: %q", text)
			}
			l := decodeLine(t, []byte(text))
			want := string([]rune(s)) // each invalid byte as U+FFFD, as encoding/json does
			if l.Host != want || l.Path != want || l.Method != want || *l.Refused != want || *l.Node != want {
				t.Errorf("decoded host %q path %q, want %q", l.Host, l.Path, want)
			}
			if l.Status != 200 || l.Bytes != 12345 {
				t.Errorf("status %d bytes %d: the text escaped its string", l.Status, l.Bytes)
			}
			if std, _ := json.Marshal(s); !strings.Contains(text, string(std[1:len(std)-1])) && !strings.ContainsAny(s, "<>&\b\f") {
				t.Errorf("encoding differs from encoding/json's: %s", std)
			}
		})
	}
}

// TestAccessLogBatching: a line waits for the batch; 64 KiB are written at
// once without waiting for the timer; Close writes the rest.
func TestAccessLogBatching(t *testing.T) {
	var out lockedBuffer
	a := newAccessLog(&out, "", AccessLogMaxPending, time.Hour)
	a.log(testRecord(), time.Now(), time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	if out.Writes() != 0 {
		t.Fatalf("a single line was written at once (%d writes)", out.Writes())
	}
	a.Close()
	if n := len(lines(out.String())); n != 1 || out.Writes() != 1 {
		t.Fatalf("after Close: %d lines in %d writes, want 1 in 1", n, out.Writes())
	}
	a.log(testRecord(), time.Now(), 0) // after Close: dropped
	if a.Dropped() != 1 {
		t.Errorf("a line after Close: %d dropped, want 1", a.Dropped())
	}

	out = lockedBuffer{}
	a = newAccessLog(&out, "", AccessLogMaxPending, time.Hour)
	defer a.Close()
	n := 0
	for size := 0; size < accessLogBatch; n++ {
		size += len(a.appendLine(nil, testRecord(), time.Now(), 0))
		a.log(testRecord(), time.Now(), 0)
	}
	for deadline := time.Now().Add(5 * time.Second); out.Writes() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("64 KiB of lines (%d) waited for the timer", n)
		}
	}
	if got := len(lines(out.String())); got != n {
		t.Errorf("the full batch wrote %d lines, want %d", got, n)
	}

	// The timer flushes too.
	out2 := &lockedBuffer{}
	a2 := newAccessLog(out2, "", AccessLogMaxPending, 10*time.Millisecond)
	defer a2.Close()
	a2.log(testRecord(), time.Now(), 0)
	for deadline := time.Now().Add(5 * time.Second); out2.Writes() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the timer did not flush a line")
		}
	}
}

// TestAccessLogConcurrent: 1000 lines from 8 goroutines are all written,
// whole.
func TestAccessLogConcurrent(t *testing.T) {
	var out lockedBuffer
	a := newAccessLog(&out, "n", AccessLogMaxPending, time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 125 {
				r := testRecord()
				r.id = fmt.Sprintf("g%d-%d", g, i)
				r.path = strings.Repeat("x", i*7) // lines of many sizes
				r.bytes = int64(g*1000 + i)
				a.log(r, time.Now(), time.Duration(i)*time.Microsecond)
			}
		})
	}
	wg.Wait()
	a.Close()
	seen := map[string]bool{}
	for _, line := range lines(out.String()) {
		l := decodeLine(t, []byte(line))
		var g, i int
		if _, err := fmt.Sscanf(l.RequestID, "g%d-%d", &g, &i); err != nil || seen[l.RequestID] {
			t.Fatalf("bad or repeated id %q", l.RequestID)
		}
		seen[l.RequestID] = true
		if l.Bytes != int64(g*1000+i) || len(l.Path) != i*7 || *l.DurationS != float64(i)/1e6 {
			t.Errorf("line %s mixes requests: %s", l.RequestID, line)
		}
	}
	if len(seen) != 1000 || a.Lines() != 1000 || a.Dropped() != 0 {
		t.Errorf("%d lines written, %d accepted, %d dropped; want 1000, 1000, 0", len(seen), a.Lines(), a.Dropped())
	}
}

// blockedWriter blocks every write until release is closed.
type blockedWriter struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	lockedBuffer
}

func (b *blockedWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return b.lockedBuffer.Write(p)
}

// TestHostileAccessLogSlowWriter: with the writer stuck, lines wait up to the bound,
// then are dropped and counted; the request never waits.
func TestHostileAccessLogSlowWriter(t *testing.T) {
	w := &blockedWriter{entered: make(chan struct{}), release: make(chan struct{})}
	const max = 32 << 10
	a := newAccessLog(w, "", max, time.Millisecond)
	reg := prometheus.NewRegistry()
	var current accessLogs
	current.cur.Store(a)
	current.register(reg)
	a.log(testRecord(), time.Now(), 0)
	select {
	case <-w.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the first line was never written")
	}
	lineLen := len(a.appendLine(nil, testRecord(), time.Now(), 0))
	start := time.Now()
	total := uint64(2000)
	if os.Getenv("EDGEPROXY_ATTACK") == "1" {
		total = 2_000_000
	}
	for range total {
		a.log(testRecord(), time.Now(), 0)
	}
	if el := time.Since(start); el > 2*time.Second+time.Duration(total)*5*time.Microsecond { // a line that waited would wait forever
		t.Errorf("logging against a stuck writer took %v", el)
	}
	dropped := a.Dropped()
	t.Logf("attack: %d lines against a stuck writer in %v: %d dropped, %d bytes waiting at most", total, time.Since(start), dropped, max)
	if dropped == 0 || dropped > total-uint64(max/lineLen)+1 {
		t.Errorf("%d of %d lines dropped with %d bytes of %d-byte lines allowed to wait", dropped, total, max, lineLen)
	}
	if got := counter(t, reg, "edgeproxy_cdn_access_log_dropped_total"); got != float64(dropped) {
		t.Errorf("edgeproxy_cdn_access_log_dropped_total %v, want %d", got, dropped)
	}
	close(w.release)
	a.Close()
	written := len(lines(w.String()))
	if uint64(written)+dropped != total+1 || uint64(written) != a.Lines() {
		t.Errorf("%d written + %d dropped != %d logged (%d accepted)", written, dropped, total+1, a.Lines())
	}
	for _, l := range lines(w.String()) {
		decodeLine(t, []byte(l))
	}
}

// counter reads a registered counter by name.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("%s is not registered", name)
	return 0
}

// failingWriter fails every write.
type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

// TestAccessLogWriteErrors: failed writes are counted and logged once a
// minute at most.
func TestAccessLogWriteErrors(t *testing.T) {
	var logs lockedBuffer
	a := newAccessLog(&failingWriter{}, "", AccessLogMaxPending, time.Hour)
	reg := prometheus.NewRegistry()
	var current accessLogs
	current.cur.Store(a)
	current.register(reg)
	a.setErrorLog(slog.New(slog.NewTextHandler(&logs, nil)))
	for range 3 {
		a.log(testRecord(), time.Now(), 0)
		a.kick <- struct{}{} // a flush each
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			a.mu.Lock()
			empty := a.pending == 0
			a.mu.Unlock()
			if empty || time.Now().After(deadline) {
				break
			}
		}
	}
	a.Close()
	if a.Errors() != 3 {
		t.Errorf("%d write errors counted, want 3", a.Errors())
	}
	if got := counter(t, reg, "edgeproxy_cdn_access_log_errors_total"); got != 3 {
		t.Errorf("edgeproxy_cdn_access_log_errors_total %v, want 3", got)
	}
	if n := strings.Count(logs.String(), "access log: write failed"); n != 1 || !strings.Contains(logs.String(), "disk full") {
		t.Errorf("%d error logs in a minute, want 1:\n%s", n, logs.String())
	}
}

// TestAccessLogServeH1 runs a request through the HTTP/1.1 path and reads
// its line.
func TestAccessLogServeH1(t *testing.T) {
	ln := fasthttputil.NewInmemoryListener()
	defer ln.Close()
	go fasthttp.Serve(ln, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("hello from the origin\n") })
	var out lockedBuffer
	access := NewAccessLog(&out, "node-a")
	u, _ := url.Parse("http://origin.test")
	reg := prometheus.NewRegistry()
	p, err := New(Options{AccessLog: access, Registerer: reg, Config: Config{HTTPPorts: []uint16{80},
		Sites: []Site{{Hosts: []string{"www.example.com"}, Origins: []Origin{{URL: u}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.tcp.Close()
	o, _ := p.pools.get(u, OriginTLS{})
	o.hc.Dial = func(string) (net.Conn, error) { return ln.Dial() }

	raddr := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000}
	for _, host := range []string{"www.example.com", "other.example", "connect"} {
		var req fasthttp.Request
		req.SetRequestURI("http://" + host + "/path?q=1")
		if host == "connect" {
			req.Header.SetMethod("CONNECT")
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, raddr, nil)
		p.serveH1(&ctx)
		if s := ctx.Response.BodyStream(); s != nil {
			io.Copy(io.Discard, s)
		}
		ctx.Response.CloseBodyStream()
	}
	access.Close()
	ls := lines(out.String())
	if len(ls) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(ls), out.String())
	}
	l := decodeLine(t, []byte(ls[0]))
	if l.Status != 200 || l.Bytes != int64(len("hello from the origin\n")) || l.Site != "www.example.com" ||
		l.Client != "198.51.100.7:40000" || l.Path != "/path" || l.Host != "www.example.com" ||
		l.Protocol != "HTTP/1.1" || *l.Node != "node-a" || l.Refused != nil || l.Upstream == "" || l.DurationS == nil {
		t.Errorf("served line: %s", ls[0])
	}
	if tm, err := time.Parse(time.RFC3339Nano, l.Time); err != nil || time.Since(tm) > time.Minute || time.Since(tm) < -time.Second {
		t.Errorf("time %q: %v", l.Time, err)
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$`).MatchString(l.Time) {
		t.Errorf("time %q is not RFC 3339 with milliseconds", l.Time)
	}
	l = decodeLine(t, []byte(ls[1]))
	if l.Refused != nil || l.Status != 421 || l.Host != "other.example" || l.Site != "" {
		t.Errorf("421 line: %s", ls[1])
	}
	l = decodeLine(t, []byte(ls[2]))
	if l.Refused == nil || *l.Refused != refuseConnect || l.Status != 405 || l.Method != "CONNECT" {
		t.Errorf("refused line: %s", ls[2])
	}
	if counter(t, reg, "edgeproxy_cdn_access_log_dropped_total") != 0 || counter(t, reg, "edgeproxy_cdn_access_log_errors_total") != 0 {
		t.Error("the access log counters are not zero")
	}
}

// FuzzAccessLogLine decodes each line with encoding/json and compares the
// fields with the record's.
func FuzzAccessLogLine(f *testing.F) {
	f.Add("id", "GET", "www.example.com", "/", "site", "up", "", 200, int64(10), int64(1500), []byte{0x20, 1, 0xd, 0xb8, 15: 1})
	f.Add("\x00", "\"", "\\", "\xff\xfe", "\u2028", "\ue000", "r", -1, int64(-1), int64(-5), []byte{192, 0, 2, 1})
	f.Add("é", "\t", "\n\r", "\xed\xa0\x80", "\xc3", "\U0010ffff", "\x7f", 999, int64(1)<<62, int64(1)<<40, []byte{})
	a := NewAccessLog(io.Discard, "n")
	f.Cleanup(func() { a.Close() })
	f.Fuzz(func(t *testing.T, id, method, host, path, site, upstream, refused string, status int, n, us int64, ip []byte) {
		r := &record{id: id, method: method, host: host, path: path, site: site, upstream: upstream, refused: refused,
			status: status, bytes: n, proto: "HTTP/2",
			edge: netip.MustParseAddrPort("203.0.113.1:443"), client: netip.MustParseAddrPort("[fe80::1%eth\"0]:1")}
		if a, ok := netip.AddrFromSlice(ip); ok {
			r.edge = netip.AddrPortFrom(a, uint16(n))
		}
		line := a.appendLine(nil, r, time.Unix(1e9, 0), time.Duration(us)*time.Microsecond)
		if bytes.IndexByte(line, '\n') != len(line)-1 {
			t.Fatalf("not one line: %q", line)
		}
		l := decodeLine(t, line)
		same := func(got, want string) bool { return got == string([]rune(want)) }
		if !same(l.RequestID, id) || !same(l.Method, method) || !same(l.Host, host) || !same(l.Path, path) ||
			!same(l.Site, site) || !same(l.Upstream, upstream) || l.Client != r.client.String() || l.Edge != r.edge.String() {
			t.Errorf("decoded %+v from %q", l, line)
		}
		if (refused == "") != (l.Refused == nil) || (l.Refused != nil && !same(*l.Refused, refused)) {
			t.Errorf("refused %q decoded as %v", refused, l.Refused)
		}
		if l.Status != status || l.Bytes != n || *l.DurationS != float64(us)/1e6 {
			t.Errorf("numbers %d %d %d decoded as %d %d %v", status, n, us, l.Status, l.Bytes, *l.DurationS)
		}
	})
}

// BenchmarkAccessLog is one line's cost: encoding, the batch, the writes
// (to io.Discard).
func BenchmarkAccessLog(b *testing.B) {
	r := testRecord()
	r.path = "/static/js/app.3f9a1c.js"
	start := time.Now()
	b.Run("serial", func(b *testing.B) {
		a := NewAccessLog(io.Discard, "edge-1")
		defer a.Close()
		b.ReportAllocs()
		for i := range b.N {
			a.log(r, start.Add(time.Duration(i)*time.Microsecond), 250*time.Microsecond)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		a := NewAccessLog(io.Discard, "edge-1")
		defer a.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				a.log(r, start.Add(time.Duration(i)*time.Microsecond), 250*time.Microsecond)
			}
		})
	})
}

// TestPlain8 checks the eight-byte test against the byte table: every
// byte at every position, and every pair of bytes at two positions (the
// borrow of one byte must not hide or fake another).
func TestPlain8(t *testing.T) {
	safe := func(w [8]byte) bool {
		for _, c := range w {
			if c >= utf8.RuneSelf || !jsonSafe[c] {
				return false
			}
		}
		return true
	}
	check := func(w [8]byte) {
		if got := plain8(binary.LittleEndian.Uint64(w[:])); got != safe(w) {
			t.Fatalf("plain8(%q) = %v", w, got)
		}
	}
	for c := range 256 {
		for pos := range 8 {
			w := [8]byte{'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'}
			w[pos] = byte(c)
			check(w)
		}
	}
	for c := range 256 {
		for d := range 256 {
			check([8]byte{'a', byte(c), byte(d), 'a', ' ', '~', byte(d), byte(c)})
		}
	}
}

// TestAppendAddrPort compares the addresses with netip's text.
func TestAppendAddrPort(t *testing.T) {
	cases := []string{"[::]:0", "[::1]:443", "[1::]:1", "[2001:db8::7]:40000", "[2001:db8:0:0:1:0:0:1]:80",
		"[2001:0:0:1:0:0:0:1]:80", "[1:2:3:4:5:6:7:8]:65535", "[0:1:0:1:0:1:0:1]:1", "[::ffff:192.0.2.1]:80",
		"[fe80::1%eth0]:8080", "[::192.0.2.1]:1", "192.0.2.1:80", "[abcd:ef01:0:10:100:1000:0:0]:9"}
	check := func(p netip.AddrPort) {
		if got, want := string(appendAddrPort(nil, p)), p.String(); got != want {
			t.Fatalf("%s: %q", want, got)
		}
	}
	for _, c := range cases {
		check(netip.MustParseAddrPort(c))
	}
	// Every pattern of zero groups, with values of every width.
	vals := []uint16{1, 0x1f, 0x2a3, 0xffff}
	for mask := range 256 {
		var ip [16]byte
		for i := range 8 {
			if mask&(1<<i) != 0 {
				v := vals[(i+mask)%len(vals)]
				ip[2*i], ip[2*i+1] = byte(v>>8), byte(v)
			}
		}
		check(netip.AddrPortFrom(netip.AddrFrom16(ip), uint16(mask)))
	}
	if got := appendAddrPort(nil, netip.AddrPort{}); len(got) != 0 {
		t.Errorf("the zero address: %q", got)
	}
}
