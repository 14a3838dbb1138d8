// Package fdlimit is the process's file-descriptor budget: one count of the
// descriptors the services hold, shared by the cdn's connections and
// origin dials, spectrum's connections, splice pipes and UDP flows, so that
// no service can take the descriptors another needs.
//
// The budget is the open-file limit less reserves that connections may not
// take: Accept (a connection is a descriptor before it can be refused), Admin
// (the admin API's connections), Dial (origin connections made apart from a
// client's connection: the cdn's pools and health checks), CDN (the cdn's
// client connections, which spectrum may not take) and Other (the
// listeners, maps, files and logs the process holds anyway, on top of what
// was open when the budget was made). Spectrum's connections, flows and
// pipes stop at the budget less every reserve; the cdn's connections may
// use the CDN reserve too, and origin dials the Dial reserve as well. Running out is a local limit: the caller refuses
// and counts, and never blames an origin.
package fdlimit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Pairs is how many connections of two descriptors each (client and
// origin) the open-file limit allows after a reserve of 1024 for
// everything else.
func Pairs() int {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<24 {
		return 100_000
	}
	return max(int(r.Cur)-1024, 128) / 2
}

// Class is what a descriptor is taken for; it decides which reserves it
// may use.
type Class int

// The classes, from the one that may use the fewest reserves.
const (
	// Spectrum: spectrum's TCP connections and UDP flows (two descriptors
	// each: client and origin) and its splice pipes. It stops short of
	// every reserve, the cdn's included.
	Spectrum Class = iota
	// CDN: the cdn's client connections. They may use the CDN reserve.
	CDN
	// Dial: origin connections apart from a client's own (the cdn's
	// pools, health checks). They may use the CDN and the Dial reserves.
	Dial
	numClasses
)

func (c Class) String() string {
	return [...]string{"spectrum", "cdn", "dial"}[c]
}

// Options size a Budget. Zero values take the defaults.
type Options struct {
	// Limit is the number of descriptors the budget shares out. Zero: the
	// open-file limit (RLIMIT_NOFILE); it may not be above it.
	Limit int
	// Reserves; zero takes the default, a negative value none.
	Accept int // default 64
	Admin  int // default 64
	Dial   int // default min(1024, Limit/16)
	CDN    int // default min(2048, Limit/8)
	Other  int // default 128, on top of the descriptors open at New
}

// Defaults of the reserves.
const (
	DefaultAccept = 64
	DefaultAdmin  = 64
	DefaultOther  = 128
	maxDialDef    = 1024
	maxCDNDef     = 2048
)

// ErrExhausted is the error of a descriptor the budget refused; it also
// stands for EMFILE and ENFILE (see Exhausted).
var ErrExhausted = errors.New("out of file descriptors (the process's budget is spent)")

// Exhausted reports whether err is a local shortage of descriptors: the
// budget refused, or the kernel said EMFILE or ENFILE. Such an error is
// never the fault of the peer being dialled.
func Exhausted(err error) bool {
	return errors.Is(err, ErrExhausted) || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// Budget counts the descriptors the services hold. Its methods are safe for
// concurrent use; a nil *Budget grants everything and counts nothing.
type Budget struct {
	limit, base                            int
	accept, admin, dial, cdn, other        int
	ceil                                   [numClasses]int64
	used                                   atomic.Int64
	byClass                                [numClasses]atomic.Int64
	refused                                [numClasses]atomic.Uint64
	inUse                                  atomic.Uint32 // a bit per class a running service takes (Use)
	limitDesc, ceilDesc, usedDesc, refDesc *prometheus.Desc
}

// New makes a budget. It fails when Limit is above the open-file limit or
// the reserves leave nothing for connections; errors name the option as
// fd_budget.<key>.
func New(o Options) (*Budget, error) {
	rl := rlimit()
	limit := o.Limit
	switch {
	case limit < 0:
		return nil, fmt.Errorf("fd_budget.limit: %d is negative", limit)
	case limit == 0:
		limit = rl
	case limit > rl:
		return nil, fmt.Errorf("fd_budget.limit: %d is above the process's open-file limit %d", limit, rl)
	}
	def := func(v, d int) int {
		switch {
		case v < 0:
			return 0
		case v == 0:
			return d
		}
		return v
	}
	b := &Budget{
		limit: limit, base: openNow(),
		accept: def(o.Accept, DefaultAccept), admin: def(o.Admin, DefaultAdmin),
		dial: def(o.Dial, min(maxDialDef, limit/16)), cdn: def(o.CDN, min(maxCDNDef, limit/8)),
		other: def(o.Other, DefaultOther),
	}
	top := int64(limit - b.base - b.other - b.accept - b.admin)
	b.ceil[Dial] = top
	b.ceil[CDN] = top - int64(b.dial)
	b.ceil[Spectrum] = top - int64(b.dial) - int64(b.cdn)
	if b.ceil[Spectrum] < 16 {
		return nil, fmt.Errorf("fd_budget: the reserves (accept %d, admin %d, dial %d, cdn %d, other %d, %d open now) leave %d of %d descriptors for connections",
			b.accept, b.admin, b.dial, b.cdn, b.other, b.base, b.ceil[Spectrum], limit)
	}
	b.limitDesc = prometheus.NewDesc("edgeproxy_fd_budget_limit", "The descriptors the budget shares out (the open-file limit or fd_budget.limit).", nil, nil)
	b.ceilDesc = prometheus.NewDesc("edgeproxy_fd_budget_ceiling", "The descriptors a class may hold in all (with the other classes): spectrum stops short of every reserve, cdn may use the cdn reserve, dial the cdn and dial reserves.", []string{"class"}, nil)
	b.usedDesc = prometheus.NewDesc("edgeproxy_fd_budget_used", "Descriptors held now, by class.", []string{"class"}, nil)
	b.refDesc = prometheus.NewDesc("edgeproxy_fd_budget_refused_total", "Descriptors the budget refused, by class: each is a connection, flow or dial refused as a local limit.", []string{"class"}, nil)
	return b, nil
}

// Default is a budget with the default reserves over the open-file limit,
// or a large one when that is too small for them.
func Default() *Budget {
	b, err := New(Options{})
	if err != nil {
		b, _ = New(Options{Accept: -1, Admin: -1, Dial: -1, Other: -1})
	}
	return b
}

// Acquire takes n descriptors of class c, or reports that the budget (for
// that class) is spent; it then counts a refusal.
func (b *Budget) Acquire(c Class, n int) bool {
	if b == nil {
		return true
	}
	for {
		u := b.used.Load()
		if u+int64(n) > b.ceil[c] {
			b.refused[c].Add(1)
			return false
		}
		if b.used.CompareAndSwap(u, u+int64(n)) {
			b.byClass[c].Add(int64(n))
			return true
		}
	}
}

// Release gives back n descriptors of class c.
func (b *Budget) Release(c Class, n int) {
	if b == nil {
		return
	}
	b.byClass[c].Add(-int64(n))
	b.used.Add(-int64(n))
}

// Used returns the descriptors held now.
func (b *Budget) Used() int {
	if b == nil {
		return 0
	}
	return int(b.used.Load())
}

// Ceiling returns how many descriptors class c may hold in all.
func (b *Budget) Ceiling(c Class) int {
	if b == nil {
		return 1 << 30
	}
	return int(b.ceil[c])
}

// Refused returns how many acquisitions of class c were refused.
func (b *Budget) Refused(c Class) uint64 {
	if b == nil {
		return 0
	}
	return b.refused[c].Load()
}

// String describes the budget for the start's log line.
func (b *Budget) String() string {
	return fmt.Sprintf("limit %d, open at start %d, reserves accept %d admin %d dial %d cdn %d other %d; ceilings spectrum %d cdn %d dial %d",
		b.limit, b.base, b.accept, b.admin, b.dial, b.cdn, b.other, b.ceil[Spectrum], b.ceil[CDN], b.ceil[Dial])
}

// Use says that a running service takes descriptors of the classes cs:
// the cdn CDN and Dial, spectrum Spectrum. /metrics has the series of
// these classes only, so that a class no service takes (the cdn's, on a
// node without the cdn) has none, which could only ever be zero.
func (b *Budget) Use(cs ...Class) {
	if b == nil {
		return
	}
	for _, c := range cs {
		b.inUse.Or(1 << c)
	}
}

// AdminReserve is the admin API's reserve, which bounds its connections.
func (b *Budget) AdminReserve() int { return b.admin }

// Describe and Collect make the budget a prometheus.Collector.
func (b *Budget) Describe(ch chan<- *prometheus.Desc) {
	ch <- b.limitDesc
	ch <- b.ceilDesc
	ch <- b.usedDesc
	ch <- b.refDesc
}

// Collect implements prometheus.Collector: the limit, and the series of
// the classes a service uses (Use).
func (b *Budget) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(b.limitDesc, prometheus.GaugeValue, float64(b.limit))
	inUse := b.inUse.Load()
	for c := range numClasses {
		if inUse&(1<<c) == 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(b.ceilDesc, prometheus.GaugeValue, float64(b.ceil[c]), c.String())
		ch <- prometheus.MustNewConstMetric(b.usedDesc, prometheus.GaugeValue, float64(b.byClass[c].Load()), c.String())
		ch <- prometheus.MustNewConstMetric(b.refDesc, prometheus.CounterValue, float64(b.refused[c].Load()), c.String())
	}
}

// Conn is a TCP connection that gives its descriptor back to the budget
// when it is closed (once).
type Conn struct {
	*net.TCPConn
	b    *Budget
	c    Class
	once sync.Once
}

// Track makes c give one descriptor of class cl back to b when it closes.
// The caller has acquired it.
func (b *Budget) Track(c *net.TCPConn, cl Class) *Conn {
	return &Conn{TCPConn: c, b: b, c: cl}
}

// Close closes the connection and releases its descriptor.
func (c *Conn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(func() { c.b.Release(c.c, 1) })
	return err
}

func rlimit() int {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<24 {
		return 1 << 24
	}
	return int(r.Cur)
}

// openNow counts the process's open descriptors.
func openNow() int {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	return max(len(names)-1, 0) // less the directory itself
}

// OpenNow counts the process's open descriptors, for tests and diagnostics.
func OpenNow() int { return openNow() }
