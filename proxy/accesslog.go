package proxy

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// AccessLog writes one JSON line per request, in batches: a line is encoded
// into a reused buffer without reflection or allocation, appended to the
// current batch (64 KiB) under a short lock, and one goroutine writes the
// batches when one is full or every 100 ms (nginx's access_log buffer=
// flush=). A request never waits for the writer: while a write is in
// progress new lines fill other batches, and past AccessLogMaxPending bytes
// waiting they are dropped and counted.
type AccessLog struct {
	w      io.Writer
	prefix []byte // `","level":"INFO","msg":"access","log":"access",["node":"…",]"request_id":"`
	max    int    // bytes that may wait for the writer; more lines are dropped

	mu      sync.Mutex
	cur     []byte   // the batch lines go to
	full    [][]byte // batches waiting for the writer
	free    [][]byte // written batches, for reuse
	pending int      // bytes in cur, full and the write in progress
	lines   uint64   // lines taken
	closed  bool

	kick chan struct{} // a batch is full
	stop chan struct{}
	done chan struct{}
	once sync.Once

	dropped atomic.Uint64
	errors  atomic.Uint64
	errLog  atomic.Pointer[slog.Logger]
	errLast time.Time // the writer's: when it last logged a write error
	out     [][]byte  // the writer's: the batches it takes

	clock atomic.Pointer[secondStamp]
}

const (
	// accessLogBatch is a batch's size: a full one is written at once.
	accessLogBatch = 64 << 10
	// AccessLogMaxPending bounds the bytes waiting for a slow writer; lines
	// past it are dropped (edgeproxy_cdn_access_log_dropped_total).
	AccessLogMaxPending = 1 << 20
	accessLogInterval   = 100 * time.Millisecond
	accessLogErrEvery   = time.Minute
)

// NewAccessLog starts an access log that writes its lines to w, each with
// node as "node" unless it is empty. Close writes what waits and stops.
func NewAccessLog(w io.Writer, node string) *AccessLog {
	return newAccessLog(w, node, AccessLogMaxPending, accessLogInterval)
}

func newAccessLog(w io.Writer, node string, max int, every time.Duration) *AccessLog {
	prefix := []byte(`","level":"INFO","msg":"access","log":"access",`)
	if node != "" {
		prefix = append(prefix, `"node":`...)
		prefix = appendJSONString(prefix, node)
		prefix = append(prefix, ',')
	}
	prefix = append(prefix, `"request_id":"`...)
	a := &AccessLog{
		w: w, prefix: prefix, max: max,
		cur:  make([]byte, 0, accessLogBatch),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	a.errLog.Store(slog.Default())
	go a.loop(every)
	return a
}

// setErrorLog makes l receive the log's write errors, at most one a minute.
func (a *AccessLog) setErrorLog(l *slog.Logger) {
	if a != nil && l != nil {
		a.errLog.Store(l)
	}
}

// Close writes the lines that wait and stops the writer; lines logged
// afterwards are dropped. It does not close the writer.
func (a *AccessLog) Close() error {
	if a == nil {
		return nil
	}
	a.once.Do(func() {
		a.mu.Lock()
		a.closed = true
		a.mu.Unlock()
		close(a.stop)
	})
	<-a.done
	return nil
}

// Lines, Dropped and Errors count the lines taken, the lines dropped (the
// writer was too slow, or the log closed) and the failed writes.
func (a *AccessLog) Lines() uint64 {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lines
}

func (a *AccessLog) Dropped() uint64 {
	if a == nil {
		return 0
	}
	return a.dropped.Load()
}

func (a *AccessLog) Errors() uint64 {
	if a == nil {
		return 0
	}
	return a.errors.Load()
}

// register exports the log's counters; a nil log exports zeros, so that
// dashboards find the series with the log off too.
// accessLogs is the proxy's access log, which a reload may replace
// (SetAccessLog), and the counts of those it replaced, so that the
// counters only grow.
type accessLogs struct {
	cur             atomic.Pointer[AccessLog] // nil: off
	dropped, errors atomic.Uint64             // of the logs replaced
}

func (l *accessLogs) register(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_access_log_dropped_total",
			Help: "Access log lines dropped because more than 1 MiB waited for the writer (or the log was closed).",
		}, func() float64 { return float64(l.dropped.Load() + l.cur.Load().Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_access_log_errors_total",
			Help: "Failed writes of the access log; each loses the lines of its batch.",
		}, func() float64 { return float64(l.errors.Load() + l.cur.Load().Errors()) }),
	)
}

// SetAccessLog makes a the proxy's access log (nil: off), from the next
// request's end on, and closes the one it replaces with closeOld, which
// writes what waits in it (nil: nothing to close).
func (p *Proxy) SetAccessLog(a *AccessLog, closeOld func() error) error {
	a.setErrorLog(p.log)
	old := p.access.cur.Swap(a)
	var err error
	if closeOld != nil {
		err = closeOld()
	}
	p.access.dropped.Add(old.Dropped())
	p.access.errors.Add(old.Errors())
	return err
}

// linePool holds the per-line buffers.
var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// log writes r's line; t is when the request ended, d how long it took.
func (a *AccessLog) log(r *record, t time.Time, d time.Duration) {
	bp := linePool.Get().(*[]byte)
	line := a.appendLine((*bp)[:0], r, t, d)
	if !a.add(line) {
		a.dropped.Add(1)
	}
	if cap(line) <= accessLogBatch {
		*bp = line
		linePool.Put(bp)
	}
}

// add appends a line to the current batch.
func (a *AccessLog) add(line []byte) bool {
	kick := false
	a.mu.Lock()
	if a.closed || a.pending+len(line) > a.max {
		a.mu.Unlock()
		return false
	}
	if len(a.cur)+len(line) > cap(a.cur) {
		if len(a.cur) > 0 {
			a.full = append(a.full, a.cur)
			kick = true
		}
		if len(line) > accessLogBatch {
			a.cur = make([]byte, 0, len(line)) // a line larger than a batch: a batch of its own
		} else if n := len(a.free); n > 0 {
			a.cur, a.free = a.free[n-1], a.free[:n-1]
		} else {
			a.cur = make([]byte, 0, accessLogBatch)
		}
	}
	a.cur = append(a.cur, line...)
	a.pending += len(line)
	a.lines++
	a.mu.Unlock()
	if kick {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
	return true
}

func (a *AccessLog) loop(every time.Duration) {
	defer close(a.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-a.kick:
		case <-a.stop:
			a.flush()
			return
		}
		a.flush()
	}
}

// flush writes the batches that wait, the current one too; only the loop
// calls it.
func (a *AccessLog) flush() {
	a.mu.Lock()
	a.out = append(a.out[:0], a.full...)
	clear(a.full)
	a.full = a.full[:0]
	if len(a.cur) > 0 {
		a.out = append(a.out, a.cur)
		a.cur = nil // the next line takes a free batch
	}
	a.mu.Unlock()
	if len(a.out) == 0 {
		return
	}
	n := 0
	for _, b := range a.out {
		n += len(b)
		if _, err := a.w.Write(b); err != nil {
			errs := a.errors.Add(1)
			if now := time.Now(); now.Sub(a.errLast) >= accessLogErrEvery {
				a.errLast = now
				a.errLog.Load().Error("access log: write failed; lines are lost", "err", err, "failed_writes", errs)
			}
		}
	}
	a.mu.Lock()
	a.pending -= n
	for _, b := range a.out {
		// Keep what a full pending bound needs, no more.
		if cap(b) == accessLogBatch && len(a.free)*accessLogBatch < a.max {
			a.free = append(a.free, b[:0])
		}
	}
	a.mu.Unlock()
	clear(a.out)
}

// appendLine appends r's JSON line. The fields and their order are those
// of the slog JSON lines before it, the duration in seconds (duration_s)
// as every log line gives durations.
func (a *AccessLog) appendLine(b []byte, r *record, t time.Time, d time.Duration) []byte {
	b = append(b, `{"time":"`...)
	b = a.appendTime(b, t)
	b = append(b, a.prefix...)
	b = appendJSONChars(b, r.id)
	b = append(b, `","site":"`...)
	b = appendJSONChars(b, r.site)
	b = append(b, `","edge":"`...)
	b = appendAddrPort(b, r.edge)
	b = append(b, `","client":"`...)
	b = appendAddrPort(b, r.client)
	b = append(b, `","protocol":"`...)
	b = appendJSONChars(b, r.proto)
	b = append(b, `","method":"`...)
	b = appendJSONChars(b, r.method)
	b = append(b, `","host":"`...)
	b = appendJSONChars(b, r.host)
	b = append(b, `","path":"`...)
	b = appendJSONChars(b, r.path)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(r.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, r.bytes, 10)
	b = append(b, `,"duration_s":`...)
	b = appendSeconds(b, d)
	b = append(b, `,"upstream":"`...)
	b = appendJSONChars(b, r.upstream)
	if r.refused != "" {
		b = append(b, `","refused":"`...)
		b = appendJSONChars(b, r.refused)
	}
	return append(b, "\"}\n"...)
}

// appendSeconds appends d as seconds, a JSON number with six decimals:
// whole microseconds, without the cost of formatting a float.
func appendSeconds(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 {
		b = append(b, '-')
		us = -us
	}
	b = strconv.AppendInt(b, us/1e6, 10)
	b = append(b, '.')
	frac := us % 1e6
	for div := int64(1e5); div > 0; div /= 10 {
		b = append(b, byte('0'+frac/div%10))
	}
	return b
}

// secondStamp is one second's time text: "2006-01-02T15:04:05." and the
// zone ("Z" or "-07:00") around the milliseconds.
type secondStamp struct {
	sec    int64
	loc    *time.Location
	prefix []byte
	zone   []byte
}

// appendTime appends t as RFC 3339 with milliseconds, in t's location as
// slog printed it (slog printed up to nine digits of the second), from a
// per-second cache.
func (a *AccessLog) appendTime(b []byte, t time.Time) []byte {
	s := a.clock.Load()
	if sec := t.Unix(); s == nil || s.sec != sec || s.loc != t.Location() {
		whole := t.Truncate(time.Second)
		s = &secondStamp{sec: sec, loc: t.Location(),
			prefix: whole.AppendFormat(nil, "2006-01-02T15:04:05."),
			zone:   whole.AppendFormat(nil, "Z07:00")}
		a.clock.Store(s)
	}
	b = append(b, s.prefix...)
	ms := t.Nanosecond() / 1e6
	b = append(b, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(b, s.zone...)
}

// appendAddrPort appends p as netip.AddrPort.String does, escaped; "" for
// the zero value.
func appendAddrPort(b []byte, p netip.AddrPort) []byte {
	a := p.Addr()
	switch {
	case !p.IsValid():
		return b
	case a.Is6() && !a.Is4In6() && a.Zone() == "":
		// netip formats IPv6 a group at a time, a large share of a
		// line's cost with an IPv6 client (docs/cdn.md, "Observability").
		b = append(b, '[')
		b = appendIPv6(b, a.As16())
		b = append(b, ']', ':')
		return strconv.AppendUint(b, uint64(p.Port()), 10)
	case a.Zone() == "":
		return p.AppendTo(b) // digits, hex, dots, colons and brackets only
	}
	return appendJSONChars(b, p.String())
}

// appendIPv6 appends ip as RFC 5952 text, as netip.Addr.String does: hex
// groups without leading zeros, the longest run of two or more zero
// groups (the first of equal ones) as "::".
func appendIPv6(b []byte, ip [16]byte) []byte {
	const hex = "0123456789abcdef"
	var g [8]uint16
	for i := range g {
		g[i] = uint16(ip[2*i])<<8 | uint16(ip[2*i+1])
	}
	zs, zl := -1, 1 // the run to compress: start, length (at least 2)
	for i := 0; i < 8; {
		if g[i] != 0 {
			i++
			continue
		}
		j := i
		for j < 8 && g[j] == 0 {
			j++
		}
		if j-i > zl {
			zs, zl = i, j-i
		}
		i = j
	}
	for i := 0; i < 8; i++ {
		if i == zs {
			b = append(b, ':', ':')
			i += zl - 1
			continue
		}
		if i > 0 && i != zs+zl {
			b = append(b, ':')
		}
		v := g[i]
		switch {
		case v >= 0x1000:
			b = append(b, hex[v>>12], hex[v>>8&0xf], hex[v>>4&0xf], hex[v&0xf])
		case v >= 0x100:
			b = append(b, hex[v>>8], hex[v>>4&0xf], hex[v&0xf])
		case v >= 0x10:
			b = append(b, hex[v>>4], hex[v&0xf])
		default:
			b = append(b, hex[v])
		}
	}
	return b
}

// appendJSONString appends s as a quoted JSON string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendJSONChars(b, s)
	return append(b, '"')
}

// jsonSafe marks the ASCII bytes a JSON string holds as they are.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plain8 reports whether none of the eight bytes in x is a control byte,
// '"', '\\' or above 0x7f.
func plain8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	ctl := (x - 0x20*ones) &^ x     // a byte below 0x20 (or above 0x7f)
	quote := x ^ '"'*ones           // zero where '"'
	slash := x ^ '\\'*ones          // zero where '\\'
	quote = (quote - ones) &^ quote // high bit where zero (or above 0x7f)
	slash = (slash - ones) &^ slash
	return (ctl|quote|slash|x)&highs == 0
}

// appendJSONChars appends s escaped for the inside of a JSON string, as
// log/slog and encoding/json do (without HTML escapes): `"` and `\`
// escaped, \n \r \t, other control bytes as \u00XX, each byte of invalid
// UTF-8 as \ufffd, and U+2028 and U+2029 escaped for JavaScript.
func appendJSONChars(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		// Eight bytes at a time while none needs escaping.
		for i+8 <= len(s) && plain8(binary.LittleEndian.Uint64([]byte(s[i:i+8]))) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
