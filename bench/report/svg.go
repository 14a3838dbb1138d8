package report

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/bench/harness"
)

// The scenarios the charts are drawn from.
const (
	LatencyScenario = "http-latency"
	LookupScenario  = "dispatch-lookup"
)

var (
	latencyMetric = regexp.MustCompile(`^(p50|p99|p999)_ms_([0-9]+)$`)
	lookupMetric  = regexp.MustCompile(`^ns_([0-9]+)([kM]?)$`)
)

func find(rs []*harness.Result, scenario string) *harness.Result {
	for _, r := range rs {
		if r.Scenario == scenario {
			return r
		}
	}
	return nil
}

// metricsOf is every metric name in r's summary.
func metricsOf(r *harness.Result) []string {
	var ms []string
	for _, vs := range r.Summary {
		for m := range vs {
			if !slices.Contains(ms, m) {
				ms = append(ms, m)
			}
		}
	}
	sort.Strings(ms)
	return ms
}

// latencyChart: http-latency's percentiles per system at each fixed rate.
func latencyChart(rs []*harness.Result) Chart {
	c := Chart{File: LatencySVG, Caption: "latency percentiles per proxy at fixed rates"}
	r := find(rs, LatencyScenario)
	if r == nil {
		c.Skipped = "no " + LatencyScenario + " result"
		return c
	}
	type key struct {
		rate int
		pct  int // 50, 99, 999
	}
	var ks []key
	names := map[key]string{}
	for _, m := range metricsOf(r) {
		sub := latencyMetric.FindStringSubmatch(m)
		if sub == nil {
			continue
		}
		rate, _ := strconv.Atoi(sub[2])
		p, _ := strconv.Atoi(strings.TrimPrefix(sub[1], "p"))
		k := key{rate, p}
		ks = append(ks, k)
		names[k] = m
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].rate != ks[j].rate {
			return ks[i].rate < ks[j].rate
		}
		return float64(ks[i].pct)/math.Pow(10, float64(len(strconv.Itoa(ks[i].pct)))) <
			float64(ks[j].pct)/math.Pow(10, float64(len(strconv.Itoa(ks[j].pct))))
	})
	ch := barChart{
		Title:  orDefault(r.Title, "Latency percentiles at fixed rates"),
		YLabel: "latency, ms (log scale)",
		XLabel: "percentile, at a fixed rate (% of the reference maximum rate)",
		Log:    true,
	}
	for _, k := range ks {
		p := "p" + strconv.Itoa(k.pct)
		if k.pct == 999 {
			p = "p99.9"
		}
		ch.Groups = append(ch.Groups, fmt.Sprintf("%s\nat %d%%", p, k.rate))
	}
	ch.fill(r.Systems, func(sys string, g int) (float64, bool) { return value(r, sys, names[ks[g]]) })
	if !ch.any() {
		c.Skipped = LatencyScenario + " has no p50_ms_<rate>, p99_ms_<rate> or p999_ms_<rate> metrics"
		return c
	}
	c.SVG = ch.svg()
	return c
}

// cpuChart: CPU per request of every http-* result whose primary is
// cpu_us, one bar per system.
func cpuChart(rs []*harness.Result) Chart {
	c := Chart{File: CPUSVG, Caption: "CPU per request per protocol and proxy"}
	var in []*harness.Result
	var systems []string
	for _, r := range rs {
		if strings.HasPrefix(r.Scenario, "http-") && r.Primary == harness.CPUPerUnit {
			in = append(in, r)
			for _, s := range r.Systems {
				if !slices.Contains(systems, s) {
					systems = append(systems, s)
				}
			}
		}
	}
	ch := barChart{
		Title:     "CPU per request of the system under test",
		YLabel:    "CPU per request (or unit), µs",
		XLabel:    "scenario",
		MinGroupW: 170,
	}
	for _, r := range in {
		label := wrap(orDefault(r.Title, r.Scenario), 22)
		if r.Unit != "" && r.Unit != "request" {
			label += "\n(µs per " + r.Unit + ")"
		}
		ch.Groups = append(ch.Groups, label)
	}
	ch.fill(systems, func(sys string, g int) (float64, bool) { return value(in[g], sys, harness.CPUPerUnit) })
	if !ch.any() {
		c.Skipped = "no http-* result with cpu_us as its primary metric"
		return c
	}
	c.SVG = ch.svg()
	return c
}

// lookupChart: dispatch-lookup's time per lookup against the number of
// bindings, per probe pattern.
func lookupChart(rs []*harness.Result) Chart {
	c := Chart{File: LookupSVG, Caption: "BPF time per lookup against bindings"}
	r := find(rs, LookupScenario)
	if r == nil {
		c.Skipped = "no " + LookupScenario + " result"
		return c
	}
	type point struct {
		n      float64
		label  string
		metric string
	}
	var ps []point
	for _, m := range metricsOf(r) {
		sub := lookupMetric.FindStringSubmatch(m)
		if sub == nil {
			continue
		}
		n, _ := strconv.ParseFloat(sub[1], 64)
		n *= map[string]float64{"": 1, "k": 1e3, "M": 1e6}[sub[2]]
		ps = append(ps, point{n, sub[1] + sub[2], m})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].n < ps[j].n })
	ch := barChart{
		Title:  orDefault(r.Title, "BPF time per lookup"),
		YLabel: "time per lookup, ns",
		XLabel: "bindings",
	}
	for _, p := range ps {
		ch.Groups = append(ch.Groups, p.label)
	}
	ch.fill(r.Systems, func(sys string, g int) (float64, bool) { return value(r, sys, ps[g].metric) })
	if !ch.any() {
		c.Skipped = LookupScenario + " has no ns_<bindings> metrics"
		return c
	}
	c.SVG = ch.svg()
	return c
}

// barChart is a grouped bar chart: a group per x category, a bar per
// series in each.
type barChart struct {
	Title, YLabel, XLabel string
	Groups                []string    // x categories; "\n" breaks a label
	Series                []string    // one bar (and colour) each
	Values                [][]float64 // [series][group]; NaN: none
	Log                   bool
	MinGroupW             int // the narrowest a group may be, px (default 96)
}

// fill sets the series and values from get, leaving out series with no
// value at all.
func (c *barChart) fill(series []string, get func(s string, group int) (float64, bool)) {
	for _, s := range series {
		vs := make([]float64, len(c.Groups))
		some := false
		for g := range c.Groups {
			v, ok := get(s, g)
			if !ok || (c.Log && v <= 0) || v < 0 {
				v = math.NaN()
			} else {
				some = true
			}
			vs[g] = v
		}
		if some {
			c.Series = append(c.Series, s)
			c.Values = append(c.Values, vs)
		}
	}
}

func (c *barChart) any() bool { return len(c.Series) > 0 && len(c.Groups) > 0 }

// colours per system, the same in every chart; others take the palette.
var (
	colours = map[string]string{
		"edgeproxy": "#d9480f", "edgeproxy-h3": "#f76707", "edgeproxy-h2": "#ffa94d", "nginx": "#2b8a3e", "nginx-h2": "#69db7c", "haproxy": "#1864ab", "direct": "#868e96",
		"kernel": "#868e96", "repeated": "#d9480f", "spread": "#5f3dc4",
	}
	palette = []string{"#e67700", "#0b7285", "#a61e4d", "#5c940d", "#364fc7", "#495057"}
)

func colour(series []string, i int) string {
	if c, ok := colours[series[i]]; ok {
		return c
	}
	return palette[i%len(palette)]
}

func (c *barChart) svg() []byte {
	const (
		left, right, top = 78, 24, 76
		plotH            = 272.0
		barMin           = 30
	)
	lines := 1
	for _, g := range c.Groups {
		lines = max(lines, strings.Count(g, "\n")+1)
	}
	bottom := 18 + 14*lines + 34 // group labels, then the x axis's label
	height := top + int(plotH) + bottom
	// a group shows only the series with a value in it, side by side
	present := make([][]int, len(c.Groups))
	nS := 1
	for g := range c.Groups {
		for s := range c.Series {
			if !math.IsNaN(c.Values[s][g]) {
				present[g] = append(present[g], s)
			}
		}
		nS = max(nS, len(present[g]))
	}
	groupW := float64(max(96, c.MinGroupW, nS*barMin+34))
	plotW := groupW * float64(len(c.Groups))
	width := max(680, int(plotW)+left+right)
	plotW = float64(width - left - right)
	groupW = plotW / float64(len(c.Groups))
	barW := (groupW - 28) / float64(nS)
	y0 := float64(top) + plotH // the x axis

	// the y scale
	lo, hi := math.Inf(1), 0.0
	for _, vs := range c.Values {
		for _, v := range vs {
			if !math.IsNaN(v) {
				hi = max(hi, v)
				if v > 0 {
					lo = min(lo, v)
				}
			}
		}
	}
	var ticks []float64
	var ypos func(v float64) float64
	if c.Log {
		a := math.Floor(math.Log10(lo))
		b := math.Ceil(math.Log10(hi))
		if b <= a {
			b = a + 1
		}
		for e := a; e <= b; e++ {
			ticks = append(ticks, math.Pow(10, e))
			if b-a <= 2 && e < b {
				ticks = append(ticks, 2*math.Pow(10, e), 5*math.Pow(10, e))
			}
		}
		sort.Float64s(ticks)
		ypos = func(v float64) float64 {
			return y0 - (math.Log10(v)-a)/(b-a)*plotH
		}
	} else {
		if hi == 0 {
			hi = 1
		}
		step := niceStep(hi / 5)
		ymax := math.Ceil(hi*1.08/step) * step
		for i := 0.0; i*step <= ymax+step/2; i++ {
			ticks = append(ticks, i*step)
		}
		ypos = func(v float64) float64 { return y0 - v/ymax*plotH }
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold" text-anchor="middle">%s</text>`+"\n", width/2, xmlText(c.Title))
	// legend
	x := float64(left)
	for i, s := range c.Series {
		fmt.Fprintf(&b, `<rect x="%.1f" y="40" width="12" height="12" fill="%s"/><text x="%.1f" y="50">%s</text>`+"\n", x, colour(c.Series, i), x+16, xmlText(s))
		x += 16 + 7.5*float64(len(s)) + 24
	}
	// grid and y axis
	for _, t := range ticks {
		y := ypos(t)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#dee2e6"/>`, left, y, width-right, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, xmlText(tick(t)))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%.1f" stroke="#212529"/>`+"\n", left, top, left, y0)
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#212529"/>`+"\n", left, y0, width-right, y0)
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", float64(top)+plotH/2, xmlText(c.YLabel))
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", float64(left)+plotW/2, height-10, xmlText(c.XLabel))
	// bars, values on them, group labels
	for g, label := range c.Groups {
		gx := float64(left) + float64(g)*groupW
		first := gx + 14 + float64(nS-len(present[g]))*barW/2 // centred
		for i, s := range present[g] {
			v := c.Values[s][g]
			bx := first + float64(i)*barW
			by := ypos(v)
			if c.Log && v < ticks[0] {
				by = y0
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %s</title></rect>`+"\n",
				bx+1, by, barW-2, y0-by, colour(c.Series, s), xmlText(c.Series[s]), xmlText(num(v)))
			if barW >= 30 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%s</text>`+"\n", bx+barW/2, by-4, xmlText(num(v)))
			} else {
				fmt.Fprintf(&b, `<text transform="translate(%.1f %.1f) rotate(-90)" font-size="10">%s</text>`+"\n", bx+barW/2+3, by-4, xmlText(num(v)))
			}
		}
		for i, line := range strings.Split(label, "\n") {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", gx+groupW/2, y0+18+14*float64(i), xmlText(line))
		}
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceStep rounds a step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// wrap breaks s into lines of about n characters (at most four).
func wrap(s string, n int) string {
	var lines []string
	cur := ""
	for _, w := range strings.Fields(s) {
		if cur != "" && len(cur)+1+len(w) > n {
			lines = append(lines, cur)
			cur = w
			continue
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	if len(lines) > 4 {
		lines = append(lines[:3], strings.Join(lines[3:], " "))
	}
	return strings.Join(lines, "\n")
}

func xmlText(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
