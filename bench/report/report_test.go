package report

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bench/harness"
)

// result makes a finished synthetic result: rounds[system] holds each
// round's metrics, round 0 (the warm-up) first.
func result(scenario, group, title, unit, primary, secondary string, systems []string, rounds map[string][]map[string]float64) *harness.Result {
	r := &harness.Result{Scenario: scenario, Group: group, Title: title, Unit: unit, Primary: primary, Secondary: secondary,
		Started: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Versions: map[string]string{"nginx": "1.22.1", "haproxy": "2.6.12"},
		Machine: harness.Machine{CPUs: 2, Model: "Test CPU", Kernel: "6.1.0-test", Go: "go1.26", LoadStart: [3]float64{0.5}, LoadEnd: [3]float64{1.5}}}
	for round := range rounds[systems[0]] {
		for _, s := range systems {
			m := map[string]float64{}
			for k, v := range rounds[s][round] {
				m[k] = v
			}
			r.Add(s, round, m)
		}
	}
	r.Finish()
	r.Seconds = 60
	return r
}

func series(metric string, vs ...float64) []map[string]float64 {
	var out []map[string]float64
	for _, v := range vs {
		out = append(out, map[string]float64{metric: v})
	}
	return out
}

func with(ms []map[string]float64, metric string, vs ...float64) []map[string]float64 {
	for i, v := range vs {
		ms[i][metric] = v
	}
	return ms
}

func synthetic() []*harness.Result {
	cpu := harness.CPUPerUnit
	h1 := result("http-h1", "http", "HTTP/1.1 keep-alive proxy, access log off", "request", cpu, harness.Rate,
		[]string{"edgeproxy", "nginx", "haproxy"}, map[string][]map[string]float64{
			// efficiency against nginx per round: 20/30, 22/33, 18/36
			"edgeproxy": with(series(cpu, 99, 30, 33, 36), harness.Rate, 1, 30000, 30300, 27000),
			"nginx":     with(series(cpu, 99, 20, 22, 18), harness.Rate, 1, 45000, 45500, 50000),
			"haproxy":   with(series(cpu, 99, 25, 26, 27), harness.Rate, 1, 40000, 38000, 37000),
		})
	h2 := result("http-h2", "http", "HTTP/2 over TLS", "request", cpu, "",
		[]string{"edgeproxy", "nginx"}, map[string][]map[string]float64{
			"edgeproxy": series(cpu, 1, 110, 117, 120),
			"nginx":     series(cpu, 1, 23, 23.4, 24),
		})
	lat := map[string][]map[string]float64{}
	for i, s := range []string{"edgeproxy", "nginx", "haproxy"} {
		f := float64(i + 1)
		ms := series("p50_ms_50", 0, 1.1*f, 1.2*f, 1.3*f)
		with(ms, "p99_ms_50", 0, 5*f, 6*f, 7*f)
		with(ms, "p999_ms_50", 0, 20*f, 21*f, 22*f)
		with(ms, "p50_ms_80", 0, 2*f, 2.1*f, 2.2*f)
		with(ms, "p99_ms_80", 0, 9*f, 10*f, 11*f)
		with(ms, "p999_ms_80", 0, 40*f, 41*f, 42*f)
		lat[s] = ms
	}
	latency := result("http-latency", "http", "latency at fixed rates", "request", "p99_ms_50", "p99_ms_80", []string{"edgeproxy", "nginx", "haproxy"}, lat)
	bulk := result("l4-tcp-bulk", "l4", "TCP bulk through spectrum", "GB", harness.Throughput, harness.CPUPerGB,
		[]string{"edgeproxy", "haproxy", "nginx"}, map[string][]map[string]float64{
			// haproxy is the best peer: 13/10, 12/10, 14/10
			"edgeproxy": with(series(harness.Throughput, 1, 13, 12, 14), harness.CPUPerGB, 1, 0.32, 0.33, 0.31),
			"haproxy":   with(series(harness.Throughput, 1, 10, 10, 10), harness.CPUPerGB, 1, 0.71, 0.7, 0.72),
			"nginx":     with(series(harness.Throughput, 1, 9, 9.2, 9.1), harness.CPUPerGB, 1, 0.82, 0.8, 0.83),
		})
	lookup := result("dispatch-lookup", "dispatch", "BPF time per lookup", "lookup", "ns_1M", "",
		[]string{"repeated", "spread"}, map[string][]map[string]float64{
			"repeated": with(with(series("ns_1", 0, 150, 151, 152), "ns_10k", 0, 210, 211, 212), "ns_1M", 0, 284, 285, 286),
			"spread":   with(with(series("ns_1", 0, 160, 161, 162), "ns_10k", 0, 982, 983, 984), "ns_1M", 0, 3111, 3112, 3113),
		})
	move := result("change-move", "change", "a prefix moves between services under load", "request", harness.Failed, "",
		[]string{"edgeproxy"}, map[string][]map[string]float64{"edgeproxy": series(harness.Failed, 0, 0, 0, 0)})
	return []*harness.Result{h1, h2, latency, bulk, lookup, move}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestRowRatiosAndDirection(t *testing.T) {
	rs := synthetic()
	h1 := MakeRow(rs[0])
	if h1.Best != "nginx" || !near(h1.Ratio, 2.0/3) || !near(h1.Lo, 0.5) || !near(h1.Hi, 2.0/3) {
		t.Errorf("http-h1: best %s ratio %v range %v–%v, want nginx, 0.667 (the efficiency, nginx's CPU over edgeproxy's), 0.5–0.667", h1.Best, h1.Ratio, h1.Lo, h1.Hi)
	}
	if h1.Unit != "µs/request" {
		t.Errorf("http-h1 unit %q", h1.Unit)
	}
	bulk := MakeRow(rs[3])
	if bulk.Best != "haproxy" || !near(bulk.Ratio, 1.3) || !near(bulk.Lo, 1.2) || !near(bulk.Hi, 1.4) {
		t.Errorf("l4-tcp-bulk: best %s ratio %v range %v–%v, want haproxy, 1.3 (higher is better: edgeproxy over the peer), 1.2–1.4", bulk.Best, bulk.Ratio, bulk.Lo, bulk.Hi)
	}
	// beside the best peer, the ratio to nginx, the proxy edgeproxy replaces
	if !near(bulk.Nginx, 13.0/9) || !near(bulk.NginxLo, 12/9.2) || !near(bulk.NginxHi, 14/9.1) || !near(h1.Nginx, h1.Ratio) {
		t.Errorf("against nginx: bulk %v (%v–%v), want 1.44 (1.30–1.54); http-h1 %v, want its best-peer ratio", bulk.Nginx, bulk.NginxLo, bulk.NginxHi, h1.Nginx)
	}
	move := MakeRow(rs[5])
	if move.Best != "" || !math.IsNaN(move.Ratio) || move.Values["edgeproxy"] != "0" {
		t.Errorf("change-move (no peer): %+v", move)
	}
	// an unfinished result (no per-round ratios) falls back on the medians
	r := *rs[0]
	r.Ratios = nil
	if row := MakeRow(&r); !near(row.Ratio, 20.0/33) || !math.IsNaN(row.Lo) {
		t.Errorf("from the medians: %v, want %v", row.Ratio, 20.0/33)
	}
}

func TestSummaryTable(t *testing.T) {
	rep := New(synthetic())
	md := string(rep.Markdown(1, ""))
	for _, want := range []string{
		"- machine: Test CPU, 2 CPUs", "- kernel: 6.1.0-test", "haproxy 2.6.12, nginx 1.22.1", "2026-12-01 10:00 UTC",
		"- mode: full", "0.5 to 1.5", "≥ 1 means edgeproxy is better", "*efficiency*",
		"\n## http\n", "\n## l4\n", "\n## dispatch\n", "\n## change\n", "# Benchmarks\n\nWritten by",
		"| HTTP/1.1 keep-alive proxy, access log off | µs/request | 33.0 (30.0k requests/s) | 20.0 (45.5k requests/s) | 26.0 (38.0k requests/s) | nginx | 0.667× | 0.500–0.667 |",
		"| HTTP/2 over TLS | µs/request | 117 | 23.4 | — | nginx | 0.200× | 0.200–0.209 |",
		"| TCP bulk through spectrum | Gbit/s | 13.0 (0.320 CPU s/GB) | 10.0 (0.710 CPU s/GB) | 9.10 (0.820 CPU s/GB) | haproxy | 1.30× | 1.20–1.40 | 1.44× | 1.30–1.54 |",
		"| BPF time per lookup | ns (ns_1M) | 285 (first) | 3112 | spread | 10.9× (repeated vs spread) |",
		"| latency at fixed rates | ms (p99_ms_50) | 6.00 (p99_ms_80: 10.0 ms) | 12.0 (p99_ms_80: 20.0 ms) | 18.0 (p99_ms_80: 30.0 ms) | nginx | 2.00× | 2.00–2.00 |",
		"| a prefix moves between services under load | requests failed | 0 | — | — | — |",
		"![latency percentiles per proxy at fixed rates](chart-latency.svg)", "(chart-cpu.svg)", "(chart-lookup.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	// one row per scenario
	for _, r := range rep.Results {
		if n := strings.Count(md, "\n| "+r.Title+" |"); n != 1 {
			t.Errorf("%d rows for %s", n, r.Scenario)
		}
	}
	// sections in order
	if i, j, k, l := strings.Index(md, "## http"), strings.Index(md, "## l4"), strings.Index(md, "## dispatch"), strings.Index(md, "## change"); !(i < j && j < k && k < l) {
		t.Errorf("sections out of order: %d %d %d %d", i, j, k, l)
	}
	if !bytes.Equal(rep.Markdown(1, ""), New(synthetic()).Markdown(1, "")) {
		t.Error("the summary differs between two runs on the same results")
	}
}

func TestTinyAndEmpty(t *testing.T) {
	rs := synthetic()
	rs[1].Tiny = true
	md := string(New(rs).Markdown(1, ""))
	if !strings.Contains(md, "mixed: **tiny** for http-h2") || !strings.Contains(md, "| HTTP/2 over TLS *(tiny)* |") {
		t.Errorf("tiny not flagged:\n%s", md)
	}
	if md := string(New(nil).Markdown(1, "")); !strings.Contains(md, "No results yet") {
		t.Errorf("no results: %s", md)
	}
}

// parse checks that b is well-formed XML with an svg root and returns its
// text.
func parse(t *testing.T, name string, b []byte) string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	var text strings.Builder
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s does not parse: %v\n%s", name, err, b)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
		case xml.CharData:
			text.Write(tok)
			text.WriteString("\n")
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root %q", name, root)
	}
	return text.String()
}

func TestCharts(t *testing.T) {
	rep := New(synthetic())
	want := map[string][]string{
		LatencySVG: {"edgeproxy", "nginx", "haproxy", "p50", "p99", "p99.9", "at 50%", "at 80%",
			"1.20", "6.00", "21.0", "2.10", "10.0", "41.0", // edgeproxy
			"2.40", "12.0", "42.0", "4.20", "20.0", "82.0", // nginx
			"3.60", "18.0", "63.0", "6.30", "30.0", "123", // haproxy
			"latency, ms (log scale)"},
		CPUSVG:    {"edgeproxy", "nginx", "haproxy", "33.0", "20.0", "26.0", "117", "23.4", "HTTP/2 over TLS", "CPU per request (or unit), µs"},
		LookupSVG: {"repeated", "spread", "151", "211", "285", "161", "983", "3112", "1", "10k", "1M", "bindings"},
	}
	for _, c := range rep.Charts {
		if c.SVG == nil {
			t.Errorf("%s skipped: %s", c.File, c.Skipped)
			continue
		}
		lines := strings.Split(parse(t, c.File, c.SVG), "\n")
		for _, w := range want[c.File] {
			found := false
			for _, l := range lines {
				if strings.TrimSpace(l) == w {
					found = true
				}
			}
			if !found {
				t.Errorf("%s has no text %q", c.File, w)
			}
		}
	}
}

func TestChartsSkipped(t *testing.T) {
	rs := synthetic()
	rep := New([]*harness.Result{rs[3], rs[5]}) // l4 and change only
	for _, c := range rep.Charts {
		if c.SVG != nil || c.Skipped == "" {
			t.Errorf("%s drawn without its data", c.File)
		}
	}
	md := string(rep.Markdown(1, ""))
	for _, f := range []string{LatencySVG, CPUSVG, LookupSVG} {
		if !strings.Contains(md, "- "+f+": not drawn, ") || strings.Contains(md, "("+f+")") {
			t.Errorf("summary does not say %s was skipped:\n%s", f, md)
		}
	}
}

const readme = "# edgeproxy\n\nintro\n\n## Performance\n\nMedian of 5 runs:\n\n| | measured |\n|---|---|\n| x | 1 |\n\n## Dependencies\n\nmore\n"

func TestUpdateReadme(t *testing.T) {
	sec := []byte("| a | b |\n|---|---|\n")
	once := UpdateReadme([]byte(readme), sec)
	want := "# edgeproxy\n\nintro\n\n## Performance\n\n" + BeginMarker + "\n| a | b |\n|---|---|\n" + EndMarker +
		"\n\nMedian of 5 runs:\n\n| | measured |\n|---|---|\n| x | 1 |\n\n## Dependencies\n\nmore\n"
	if string(once) != want {
		t.Fatalf("first update:\n%s\nwant:\n%s", once, want)
	}
	if twice := UpdateReadme(once, sec); !bytes.Equal(once, twice) {
		t.Errorf("not idempotent:\n%s", twice)
	}
	other := UpdateReadme(once, []byte("new\n"))
	i, j := strings.Index(string(other), BeginMarker), strings.Index(string(other), EndMarker)
	oi, oj := strings.Index(string(once), BeginMarker), strings.Index(string(once), EndMarker)
	if string(other[:i]) != string(once[:oi]) || string(other[j:]) != string(once[oj:]) || string(other[i:j]) != BeginMarker+"\nnew\n" {
		t.Errorf("a new section changed more than the section:\n%s", other)
	}
	// no Performance heading: the section goes at the end
	bare := UpdateReadme([]byte("# x\n\ntext"), sec)
	if !strings.HasPrefix(string(bare), "# x\n\ntext\n\n## Performance\n\n"+BeginMarker) || !bytes.Equal(UpdateReadme(bare, sec), bare) {
		t.Errorf("without a Performance heading:\n%s", bare)
	}
}

func TestGenerate(t *testing.T) {
	top := t.TempDir()
	dir := filepath.Join(top, "bench", "results")
	for _, r := range synthetic() {
		if r.Scenario == LookupScenario {
			continue
		}
		if _, err := r.Write(dir); err != nil {
			t.Fatal(err)
		}
	}
	stale := filepath.Join(dir, LookupSVG)
	if err := os.WriteFile(stale, []byte("<svg/>"), 0o644); err != nil {
		t.Fatal(err)
	}
	rm := filepath.Join(top, "README.md")
	if err := os.WriteFile(rm, []byte(readme), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := Generate(dir, rm)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Readme || len(w.Removed) != 1 || len(w.Skipped) != 1 {
		t.Errorf("written: %+v", w)
	}
	for _, f := range []string{SummaryFile, LatencySVG, CPUSVG} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("the stale lookup chart is still there")
	}
	b, _ := os.ReadFile(rm)
	for _, want := range []string{"\n### http\n", "\n### Charts\n", "](bench/results/chart-cpu.svg)", "](bench/results/chart-latency.svg)", "chart-lookup.svg: not drawn, no dispatch-lookup result", "## Dependencies\n\nmore\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("README lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "\n# Benchmarks") || strings.Contains(string(b), "\n#### ") {
		t.Error("the README got summary.md's title")
	}
	w, err = Generate(dir, rm)
	if err != nil || w.Readme {
		t.Errorf("a second run changed the README: %v %+v", err, w)
	}
	if b2, _ := os.ReadFile(rm); !bytes.Equal(b, b2) {
		t.Error("README changed")
	}
}

func TestNumbers(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 0.984: "0.984", 0.05: "0.0500", 1: "1.00", 31.14: "31.1", 117.4: "117", 4521: "4521", 45500: "45.5k", 1.2e6: "1.20M"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
	for v, want := range map[float64]string{0: "0", 5: "5", 2.5: "2.5", 10: "10", 20000: "20k", 1.5e6: "1.5M", 0.2: "0.2"} {
		if got := tick(v); got != want {
			t.Errorf("tick(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestMetricUnitsAndDirection(t *testing.T) {
	for _, c := range []struct {
		metric, unit string
		higher       bool
	}{
		{harness.CPUPerUnit, "µs/request", false},
		{harness.Rate, "requests/s", true},
		{"rate_10k", "requests/s", true},
		{"per_s_100k", "requests/s", true},
		{"s_100k", "s", false},
		{"ns_1M", "ns", false},
		{"wall_ns_10k", "ns", false},
		{"p999_ms_80", "ms", false},
		{"kb_per_conn_tls", "KB/connection", false},
		{harness.Throughput, "Gbit/s", true},
		{harness.CPUPerGB, "CPU s/GB", false},
	} {
		if u := MetricUnit(c.metric, "request"); u != c.unit {
			t.Errorf("%s: unit %q, want %q", c.metric, u, c.unit)
		}
		if h := HigherIsBetter(c.metric); h != c.higher {
			t.Errorf("%s: higher is better %v, want %v", c.metric, h, c.higher)
		}
	}
}
