// Package report turns the harness's results (bench/results/*.json) into
// bench/results/summary.md, the SVG charts beside it, and the README's
// benchmark section. It reads only what the JSON holds: nothing is copied
// by hand.
package report

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/bench/harness"
)

// Files written into the results directory.
const (
	SummaryFile = "summary.md"
	LatencySVG  = "chart-latency.svg"
	CPUSVG      = "chart-cpu.svg"
	LookupSVG   = "chart-lookup.svg"
)

// groupOrder is the order of the summary's sections; other groups follow,
// sorted.
var groupOrder = []string{"http", "l4", "dispatch", "change"}

// Chart is one drawn (or skipped) chart.
type Chart struct {
	File    string // e.g. chart-cpu.svg
	Caption string
	SVG     []byte // nil: skipped
	Skipped string // why it was not drawn
}

// Report is everything made from one directory of results.
type Report struct {
	Results []*harness.Result
	Charts  []Chart
}

// New makes the report of rs (as harness.ReadResults returns them).
func New(rs []*harness.Result) *Report {
	return &Report{Results: rs, Charts: []Chart{latencyChart(rs), cpuChart(rs), lookupChart(rs)}}
}

// Written says what Generate wrote.
type Written struct {
	Files   []string // paths written
	Removed []string // stale charts removed (their data is gone)
	Skipped []string // charts not drawn, with why
	Readme  bool     // the README's section was changed
}

// Generate reads dir's results and writes dir/summary.md and the charts;
// if readme is not empty it also replaces that file's benchmark section
// (between the markers; see UpdateReadme), with the images' paths relative
// to the README.
func Generate(dir, readme string) (*Written, error) {
	rs, err := harness.ReadResults(dir)
	if err != nil {
		return nil, err
	}
	rep := New(rs)
	w := &Written{}
	for _, c := range rep.Charts {
		p := filepath.Join(dir, c.File)
		if c.SVG == nil {
			w.Skipped = append(w.Skipped, c.File+": "+c.Skipped)
			if err := os.Remove(p); err == nil {
				w.Removed = append(w.Removed, p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return w, err
			}
			continue
		}
		if err := os.WriteFile(p, c.SVG, 0o644); err != nil {
			return w, err
		}
		w.Files = append(w.Files, p)
	}
	p := filepath.Join(dir, SummaryFile)
	if err := os.WriteFile(p, rep.Markdown(1, ""), 0o644); err != nil {
		return w, err
	}
	w.Files = append(w.Files, p)
	if readme == "" {
		return w, nil
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return w, err
	}
	absReadme, err := filepath.Abs(readme)
	if err != nil {
		return w, err
	}
	rel, err := filepath.Rel(filepath.Dir(absReadme), absDir)
	if err != nil {
		return w, err
	}
	old, err := os.ReadFile(readme)
	if err != nil {
		return w, err
	}
	updated := UpdateReadme(old, rep.Markdown(2, filepath.ToSlash(rel)))
	if !bytes.Equal(old, updated) {
		if err := os.WriteFile(readme, updated, 0o644); err != nil {
			return w, err
		}
		w.Readme = true
	}
	w.Files = append(w.Files, readme)
	return w, nil
}

// Markdown is the summary: a header (machine, kernel, versions, date,
// mode, load average), a table per group, and the charts. level is the
// document's own heading level: 1 for summary.md, which then has a title;
// 2 inside the README, whose "## Performance" stands for it. The sections
// are a level below. Images are linked as imageDir/<file> (imageDir ""
// for beside the results).
func (rep *Report) Markdown(level int, imageDir string) []byte {
	var b bytes.Buffer
	h := func(extra int, s string) {
		fmt.Fprintf(&b, "%s %s\n\n", strings.Repeat("#", level+extra), s)
	}
	if level <= 1 {
		h(0, "Benchmarks")
		b.WriteString("Written by `edgebench report` (and at the end of every `edgebench run`, `make bench`) from the results beside it, `bench/results/*.json`: do not edit by hand.\n\n")
	}
	rs := rep.Results
	if len(rs) == 0 {
		b.WriteString("No results yet: run `make bench`.\n")
		return b.Bytes()
	}
	rep.header(&b)
	b.WriteString("Each value is the median over the measured rounds of the scenario's primary metric, with the secondary in parentheses. " +
		"The ratio compares edgeproxy (the first system of each row) with the best peer of that row, oriented so that **≥ 1 means edgeproxy is better**: " +
		"for lower-is-better metrics (CPU per unit, latency, memory) it is the *efficiency*, the peer's value over edgeproxy's; " +
		"for higher-is-better metrics (rate, throughput) it is edgeproxy's value over the peer's. " +
		"It is the median of the per-round ratios (round *i* of edgeproxy against round *i* of the peer); the range beside it is their minimum and maximum.\n\n")
	for _, g := range groups(rs) {
		h(1, g)
		var in []*harness.Result
		for _, r := range rs {
			if r.Group == g {
				in = append(in, r)
			}
		}
		table(&b, in)
	}
	h(1, "Charts")
	var parts []string
	var skipped strings.Builder
	for _, c := range rep.Charts {
		if c.SVG == nil {
			fmt.Fprintf(&skipped, "- %s: not drawn, %s.\n", c.File, c.Skipped)
			continue
		}
		src := c.File
		if imageDir != "" {
			src = path.Join(imageDir, c.File)
		}
		parts = append(parts, fmt.Sprintf("![%s](%s)\n", c.Caption, src))
	}
	if skipped.Len() > 0 {
		parts = append(parts, skipped.String())
	}
	b.WriteString(strings.Join(parts, "\n"))
	return b.Bytes()
}

func (rep *Report) header(b *bytes.Buffer) {
	rs := rep.Results
	machines := map[string]bool{}
	var kernels, gos []string
	versions := map[string][]string{}
	var sysNames []string
	loadMin, loadMax := math.Inf(1), math.Inf(-1)
	first, last := rs[0].Started, rs[0].Started
	seconds := 0.0
	var tiny, full []string
	for _, r := range rs {
		m := r.Machine
		if m.Model != "" || m.CPUs != 0 {
			machines[fmt.Sprintf("%s, %d CPUs", orDash(m.Model), m.CPUs)] = true
		}
		if m.Kernel != "" && !slices.Contains(kernels, m.Kernel) {
			kernels = append(kernels, m.Kernel)
		}
		if m.Go != "" && !slices.Contains(gos, m.Go) {
			gos = append(gos, m.Go)
		}
		for sys, v := range r.Versions {
			if !slices.Contains(sysNames, sys) {
				sysNames = append(sysNames, sys)
			}
			if v != "" && !slices.Contains(versions[sys], v) {
				versions[sys] = append(versions[sys], v)
			}
		}
		for _, l := range []float64{m.LoadStart[0], m.LoadEnd[0]} {
			loadMin, loadMax = min(loadMin, l), max(loadMax, l)
		}
		if !r.Started.IsZero() && (first.IsZero() || r.Started.Before(first)) {
			first = r.Started
		}
		if r.Started.After(last) {
			last = r.Started
		}
		seconds += r.Seconds
		if r.Tiny {
			tiny = append(tiny, r.Scenario)
		} else {
			full = append(full, r.Scenario)
		}
	}
	ms := keys(machines)
	sort.Strings(sysNames)
	var vs []string
	for _, s := range sysNames {
		if len(versions[s]) > 0 {
			vs = append(vs, s+" "+strings.Join(versions[s], " / "))
		}
	}
	mode := "full (5 measured rounds after a warm-up)"
	switch {
	case len(full) == 0:
		mode = "**tiny** (a smoke test: one short round, the figures mean little)"
	case len(tiny) > 0:
		mode = fmt.Sprintf("mixed: **tiny** for %s, full for the others", strings.Join(tiny, ", "))
	}
	date := first.UTC().Format("2006-01-02 15:04 UTC")
	if !last.Equal(first) {
		date += " to " + last.UTC().Format("2006-01-02 15:04 UTC")
	}
	fmt.Fprintf(b, "- machine: %s\n", orDash(strings.Join(ms, "; ")))
	fmt.Fprintf(b, "- kernel: %s; %s\n", orDash(strings.Join(kernels, ", ")), orDash(strings.Join(gos, ", ")))
	fmt.Fprintf(b, "- versions: %s\n", orDash(strings.Join(vs, ", ")))
	fmt.Fprintf(b, "- date: %s; %d scenarios, %s of measuring\n", date, len(rs), duration(seconds))
	fmt.Fprintf(b, "- mode: %s\n", mode)
	fmt.Fprintf(b, "- load average (1 min) at the scenarios' starts and ends: %s to %s\n\n", tick(loadMin), tick(loadMax))
}

// groups in the summary's order.
func groups(rs []*harness.Result) []string {
	var gs []string
	for _, r := range rs {
		if !slices.Contains(gs, r.Group) {
			gs = append(gs, r.Group)
		}
	}
	rank := func(g string) int {
		if i := slices.Index(groupOrder, g); i >= 0 {
			return i
		}
		return len(groupOrder)
	}
	sort.SliceStable(gs, func(i, j int) bool {
		if rank(gs[i]) != rank(gs[j]) {
			return rank(gs[i]) < rank(gs[j])
		}
		return gs[i] < gs[j]
	})
	return gs
}

// Row is one scenario's line of the summary, computed from its result.
type Row struct {
	Scenario, Title string
	Metric          string // the primary metric
	Unit            string // of the metric, e.g. µs/request
	Self            string // Systems[0], normally edgeproxy
	Values          map[string]string
	Best            string  // the best peer by the primary metric ("" with none)
	Ratio           float64 // ≥ 1: Self is better; NaN when none
	Lo, Hi          float64 // range of the per-round ratios, same direction
	// Nginx is Self against nginx, the proxy edgeproxy replaces, oriented
	// as Ratio, with its per-round range; NaN without nginx in the row.
	Nginx, NginxLo, NginxHi float64
	Tiny                    bool
}

// MakeRow computes r's summary row.
func MakeRow(r *harness.Result) Row {
	row := Row{Scenario: r.Scenario, Title: r.Title, Metric: r.Primary, Unit: MetricUnit(r.Primary, r.Unit),
		Values: map[string]string{}, Ratio: math.NaN(), Lo: math.NaN(), Hi: math.NaN(),
		Nginx: math.NaN(), NginxLo: math.NaN(), NginxHi: math.NaN(), Tiny: r.Tiny}
	if row.Title == "" {
		row.Title = r.Scenario
	}
	if len(r.Systems) == 0 {
		return row
	}
	row.Self = r.Systems[0]
	for _, s := range r.Systems {
		row.Values[s] = cell(r, s)
	}
	if r.Primary == "" {
		return row
	}
	higher := HigherIsBetter(r.Primary)
	selfV, selfOK := value(r, row.Self, r.Primary)
	bestV := math.NaN()
	for _, p := range r.Systems[1:] {
		v, ok := value(r, p, r.Primary)
		if !ok {
			continue
		}
		if row.Best == "" || (higher && v > bestV) || (!higher && v < bestV) {
			row.Best, bestV = p, v
		}
	}
	if row.Best == "" || !selfOK {
		return row
	}
	row.Ratio, row.Lo, row.Hi = against(r, row.Best, selfV, bestV, higher)
	if v, ok := value(r, "nginx", r.Primary); ok && slices.Contains(r.Systems[1:], "nginx") {
		row.Nginx, row.NginxLo, row.NginxHi = against(r, "nginx", selfV, v, higher)
	}
	return row
}

// against is the first system's ratio to peer, oriented so that ≥ 1 means
// it is better: the median of the per-round ratios with their range, or
// without them (an unfinished result) the medians' ratio.
func against(r *harness.Result, peer string, selfV, peerV float64, higher bool) (ratio, lo, hi float64) {
	orient := func(x float64) float64 {
		if higher {
			return x
		}
		return 1 / x
	}
	var per []float64
	for _, x := range r.Ratios[peer][r.Primary].PerRound {
		if x > 0 && !math.IsInf(x, 0) {
			per = append(per, orient(x))
		}
	}
	if len(per) > 0 {
		return harness.Median(per), slices.Min(per), slices.Max(per)
	}
	if selfV > 0 && peerV > 0 {
		return orient(selfV / peerV), math.NaN(), math.NaN()
	}
	return math.NaN(), math.NaN(), math.NaN()
}

// value is system s's median of metric m.
func value(r *harness.Result, s, m string) (float64, bool) {
	v, ok := r.Summary[s][m]
	return v, ok && !math.IsNaN(v) && !math.IsInf(v, 0)
}

// cell shows s's primary (and secondary) value.
func cell(r *harness.Result, s string) string {
	v, ok := value(r, s, r.Primary)
	if !ok {
		return "—"
	}
	out := num(v)
	if r.Secondary != "" {
		if w, ok := value(r, s, r.Secondary); ok {
			out += " (" + named(r.Secondary) + num(w) + " " + MetricUnit(r.Secondary, r.Unit) + ")"
		}
	}
	return out
}

// named is "metric: " for a metric that is not one of the harness's own
// (p99_ms_80, kb_per_conn_tls), which its unit alone does not tell apart.
func named(metric string) string {
	if known(metric) {
		return ""
	}
	return metric + ": "
}

func known(metric string) bool {
	switch metric {
	case harness.Rate, harness.CPUPerUnit, harness.P50, harness.P99, harness.P999, harness.Failed, harness.MemPerConn,
		harness.Throughput, harness.CPUPerGB, harness.LossPct, harness.LookupNS, harness.LatencyMS:
		return true
	}
	return false
}

// table writes one group's table: a column per system appearing in the
// group, in order of appearance (edgeproxy first).
func table(b *bytes.Buffer, rs []*harness.Result) {
	var cols []string
	for _, r := range rs {
		for _, s := range r.Systems {
			if !slices.Contains(cols, s) {
				cols = append(cols, s)
			}
		}
	}
	b.WriteString("| scenario | unit |")
	for _, c := range cols {
		b.WriteString(" " + c + " |")
	}
	b.WriteString(" best peer | edgeproxy vs best peer (≥ 1: edgeproxy better) | per-round range |")
	vsNginx := slices.Contains(cols, "nginx")
	if vsNginx {
		b.WriteString(" edgeproxy vs nginx | per-round range |")
	}
	b.WriteString("\n|---|---|")
	b.WriteString(strings.Repeat("---:|", len(cols)))
	b.WriteString("---|---:|---:|")
	if vsNginx {
		b.WriteString("---:|---:|")
	}
	b.WriteString("\n")
	for _, r := range rs {
		row := MakeRow(r)
		title := row.Title
		if row.Tiny {
			title += " *(tiny)*"
		}
		unit := orDash(row.Unit)
		if row.Metric != "" && !known(row.Metric) {
			unit += " (" + row.Metric + ")"
		}
		fmt.Fprintf(b, "| %s | %s |", esc(title), esc(unit))
		for _, c := range cols {
			v, ok := row.Values[c]
			if !ok {
				v = "—"
			} else if c == row.Self && len(r.Systems) > 1 && row.Self != "edgeproxy" {
				v += " (first)"
			}
			fmt.Fprintf(b, " %s |", esc(v))
		}
		ratio, rng := "—", rangeOrDash(row.Lo, row.Hi)
		if !math.IsNaN(row.Ratio) {
			ratio = ratioStr(row.Ratio)
			if row.Self != "edgeproxy" {
				ratio += " (" + row.Self + " vs " + row.Best + ")"
			}
		}
		fmt.Fprintf(b, " %s | %s | %s |", esc(orDash(row.Best)), esc(ratio), rng)
		if vsNginx {
			fmt.Fprintf(b, " %s | %s |", ratioOrDash(row.Nginx), rangeOrDash(row.NginxLo, row.NginxHi))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	for _, r := range rs {
		for _, n := range r.Notes {
			fmt.Fprintf(b, "- %s: %s\n", esc(orDash(r.Title)), n)
		}
	}
	for _, r := range rs {
		if len(r.Notes) > 0 {
			b.WriteString("\n")
			break
		}
	}
}

// HigherIsBetter reports whether more of metric is better: the harness's
// list, the names made from them with a suffix (rate_tls), and per_s_<size>.
func HigherIsBetter(metric string) bool {
	if stem(metric) == "per_s" {
		return true
	}
	for k := range harness.HigherIsBetter {
		if metric == k || strings.HasPrefix(metric, k+"_") {
			return true
		}
	}
	return false
}

func ratioStr(x float64) string { return num(x) + "×" }

func ratioOrDash(x float64) string {
	if math.IsNaN(x) {
		return "—"
	}
	return ratioStr(x)
}

func rangeOrDash(lo, hi float64) string {
	if math.IsNaN(lo) {
		return "—"
	}
	return num(lo) + "–" + num(hi)
}

// MetricUnit is the unit a metric is shown in, unit being the scenario's
// unit of work. Metric names with a suffix (p99_ms_50) take their stem's.
func MetricUnit(metric, unit string) string {
	if unit == "" {
		unit = "unit"
	}
	units := map[string]string{
		harness.Rate:       unit + "s/s",
		harness.CPUPerUnit: "µs/" + unit,
		harness.P50:        "ms",
		harness.P99:        "ms",
		harness.P999:       "ms",
		harness.Failed:     unit + "s failed",
		harness.MemPerConn: "KB/connection",
		harness.Throughput: "Gbit/s",
		harness.CPUPerGB:   "CPU s/GB",
		harness.LossPct:    "% lost",
		harness.LookupNS:   "ns/lookup",
		harness.LatencyMS:  "ms",
	}
	if u, ok := units[metric]; ok {
		return u
	}
	best := ""
	for k := range units {
		if strings.HasPrefix(metric, k+"_") && len(k) > len(best) {
			best = k
		}
	}
	if best != "" {
		return units[best]
	}
	switch stem(metric) {
	case "ns", "wall_ns":
		return "ns"
	case "us":
		return "µs"
	case "ms":
		return "ms"
	case "s":
		return "s"
	case "per_s":
		return unit + "s/s"
	}
	return metric
}

// sized is a metric name ending in a size: ns_10k, per_s_100k, rate_1M.
var sized = regexp.MustCompile(`^(.+)_[0-9]+[kM]?$`)

// stem is metric without its size suffix.
func stem(metric string) string {
	if m := sized.FindStringSubmatch(metric); m != nil {
		return m[1]
	}
	return metric
}

// num formats a figure with three significant digits, thousands as k and
// millions as M.
func num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return sig(v/1e9) + "G"
	case a >= 1e6:
		return sig(v/1e6) + "M"
	case a >= 1e4:
		return sig(v/1e3) + "k"
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return sig(v)
}

func sig(v float64) string {
	a := math.Abs(v)
	d := 0
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		d = 0
	case a >= 10:
		d = 1
	case a >= 1:
		d = 2
	default:
		d = 2 - int(math.Floor(math.Log10(a)))
	}
	return strconv.FormatFloat(v, 'f', d, 64)
}

// tick formats an axis tick: num without trailing zeros.
func tick(v float64) string {
	s := num(v)
	if n, unit, ok := strings.Cut(s, "."); ok {
		frac := strings.TrimRight(strings.TrimRightFunc(unit, func(r rune) bool { return r < '0' || r > '9' }), "0")
		suffix := strings.TrimLeftFunc(unit, func(r rune) bool { return r >= '0' && r <= '9' })
		if frac == "" {
			return n + suffix
		}
		return n + "." + frac + suffix
	}
	return s
}

func duration(s float64) string {
	if s < 120 {
		return strconv.FormatFloat(math.Round(s), 'f', 0, 64) + " s"
	}
	return strconv.FormatFloat(s/60, 'f', 1, 64) + " min"
}

func esc(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
