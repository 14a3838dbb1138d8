package fdlimit

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestHostileBudgetReserves: spectrum cannot take the cdn's, the dial or
// the admin and accept reserves; the cdn cannot take the dial reserve;
// every refusal is counted; releases give the descriptors back.
func TestHostileBudgetReserves(t *testing.T) {
	b, err := New(Options{Limit: 1000, Accept: 10, Admin: 20, Dial: 30, CDN: 40, Other: 50})
	if err != nil {
		t.Fatal(err)
	}
	top := 1000 - b.base - 10 - 20 - 50
	if b.Ceiling(Dial) != top || b.Ceiling(CDN) != top-30 || b.Ceiling(Spectrum) != top-30-40 {
		t.Fatalf("ceilings %d %d %d, top %d", b.Ceiling(Spectrum), b.Ceiling(CDN), b.Ceiling(Dial), top)
	}
	n := 0
	for b.Acquire(Spectrum, 2) {
		n += 2
	}
	if n != top-70-(top-70)%2 || b.Refused(Spectrum) != 1 {
		t.Fatalf("spectrum took %d of %d, refused %d", n, top-70, b.Refused(Spectrum))
	}
	cdn := 0
	for b.Acquire(CDN, 1) {
		cdn++
	}
	if n+cdn != top-30 {
		t.Fatalf("the cdn took %d beside spectrum's %d: want up to %d", cdn, n, top-30)
	}
	dial := 0
	for b.Acquire(Dial, 1) {
		dial++
	}
	if dial != 30 || b.Refused(CDN) != 1 || b.Refused(Dial) != 1 {
		t.Fatalf("dials took %d of the reserve of 30; refused cdn %d dial %d", dial, b.Refused(CDN), b.Refused(Dial))
	}
	b.Release(Dial, 1)
	if !b.Acquire(Dial, 1) || b.Acquire(Dial, 1) {
		t.Fatal("a release did not make exactly room for one")
	}
	b.Release(Spectrum, 2) // below the spectrum ceiling only once the others leave
	if b.Acquire(Spectrum, 2) {
		t.Fatal("spectrum took a descriptor of the reserves")
	}
	if b.Used() != top-2 {
		t.Fatalf("used %d, want %d", b.Used(), top-2)
	}
}

func TestBudgetOptions(t *testing.T) {
	if _, err := New(Options{Limit: rlimit() + 1}); err == nil || !errorsContain(err, "fd_budget.limit") {
		t.Errorf("a limit above RLIMIT_NOFILE: %v", err)
	}
	if _, err := New(Options{Limit: 300, Dial: 200}); err == nil || !errorsContain(err, "fd_budget") {
		t.Errorf("reserves above the limit: %v", err)
	}
	b, err := New(Options{Limit: 20000})
	if err != nil {
		t.Fatal(err)
	}
	if b.dial != 1024 || b.cdn != 2048 || b.accept != 64 || b.admin != 64 || b.other != 128 {
		t.Errorf("defaults at 20000: %s", b)
	}
	for _, err := range []error{ErrExhausted, syscall.EMFILE, syscall.ENFILE, fmt.Errorf("dial: %w", syscall.EMFILE)} {
		if !Exhausted(err) {
			t.Errorf("Exhausted(%v) = false", err)
		}
	}
	if Exhausted(syscall.ECONNREFUSED) || Exhausted(errors.New("x")) {
		t.Error("Exhausted of an origin's error")
	}
	var nb *Budget
	if !nb.Acquire(Spectrum, 1000) {
		t.Error("a nil budget refused")
	}
}

func errorsContain(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

// TestSeriesOfClassesInUse: /metrics has a class's series only once a
// service uses the class; before, only the limit.
func TestSeriesOfClassesInUse(t *testing.T) {
	b, err := New(Options{Limit: 1000, Accept: 10, Admin: 20, Dial: 30, CDN: 40, Other: 50})
	if err != nil {
		t.Fatal(err)
	}
	classes := func() []string {
		reg := prometheus.NewRegistry()
		reg.MustRegister(b)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					got = append(got, mf.GetName()+"{"+l.GetValue()+"}")
				}
				if len(m.GetLabel()) == 0 {
					got = append(got, mf.GetName())
				}
			}
		}
		return got
	}
	if got := classes(); !slices.Equal(got, []string{"edgeproxy_fd_budget_limit"}) {
		t.Errorf("no class in use: %v, want the limit only", got)
	}
	b.Use(Spectrum)
	want := []string{"edgeproxy_fd_budget_ceiling{spectrum}", "edgeproxy_fd_budget_limit", "edgeproxy_fd_budget_refused_total{spectrum}", "edgeproxy_fd_budget_used{spectrum}"}
	if got := classes(); !slices.Equal(got, want) {
		t.Errorf("spectrum in use: %v, want %v", got, want)
	}
}
