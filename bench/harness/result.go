// Package harness runs edgeproxy's benchmarks against its peers (nginx,
// HAProxy, the kernel): scenarios whose systems run alternately, round
// after round, the system under test pinned to CPU 0 and the load generator
// and origin to CPU 1, with CPU per unit of work read from /proc. It writes
// one JSON file per scenario; package report turns them into the summary
// and the charts.
package harness

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"
)

// Well-known metric names. A metric is lower-is-better unless it is in
// HigherIsBetter.
const (
	Rate       = "rate"        // units of work per second
	CPUPerUnit = "cpu_us"      // CPU time of the system under test per unit, µs
	P50        = "p50_ms"      // latency percentiles, ms (coordinated omission corrected)
	P99        = "p99_ms"      //
	P999       = "p999_ms"     //
	Failed     = "failed"      // units of work that failed
	MemPerConn = "kb_per_conn" // memory per idle connection, KB
	Throughput = "gbit_s"      // bulk throughput, Gbit/s
	CPUPerGB   = "cpu_s_per_gb"
	LossPct    = "loss_pct"
	LookupNS   = "lookup_ns"
	LatencyMS  = "latency_ms" // a single latency (e.g. API call to data plane)
)

// HigherIsBetter lists the metrics where more is better.
var HigherIsBetter = map[string]bool{Rate: true, Throughput: true}

// Round is one measured (or warm-up) run of one system.
type Round struct {
	System  string             `json:"system"`
	Round   int                `json:"round"` // 0: warm-up
	Metrics map[string]float64 `json:"metrics"`
}

// Machine describes where a result was measured.
type Machine struct {
	CPUs      int        `json:"cpus"`
	Model     string     `json:"model"`
	Kernel    string     `json:"kernel"`
	Go        string     `json:"go"`
	LoadStart [3]float64 `json:"load_avg_start"`
	LoadEnd   [3]float64 `json:"load_avg_end"`
}

// Result is one scenario's whole record.
type Result struct {
	Scenario string `json:"scenario"` // file name: bench/results/<scenario>.json
	Title    string `json:"title"`    // a row of the summary table
	Group    string `json:"group"`    // http, l4, dispatch, change
	Unit     string `json:"unit"`     // the unit of work: request, connection, GB, lookup, ...
	// Primary is the metric the summary compares (e.g. cpu_us); Secondary
	// is shown beside it (e.g. rate). Either may be empty.
	Primary   string            `json:"primary"`
	Secondary string            `json:"secondary,omitempty"`
	Systems   []string          `json:"systems"` // edgeproxy first; the peers after
	Versions  map[string]string `json:"versions"`
	Machine   Machine           `json:"machine"`
	Params    map[string]any    `json:"params,omitempty"` // connections, rates, sizes, ...
	Started   time.Time         `json:"started_at"`
	Seconds   float64           `json:"duration_s"`
	Tiny      bool              `json:"tiny"`
	Rounds    []Round           `json:"rounds"`
	// Summary: per system, the median of every metric over measured rounds.
	Summary map[string]map[string]float64 `json:"summary"`
	// Ratios: per peer, per metric, edgeproxy's value over the peer's in
	// each round pair (round i of both), and their median. For
	// higher-is-better metrics above 1 is better for edgeproxy; for the
	// others below 1 is.
	Ratios map[string]map[string]Ratio `json:"ratios,omitempty"`
	Notes  []string                    `json:"notes,omitempty"`
}

// Ratio is edgeproxy's metric over a peer's, per round pair and median.
type Ratio struct {
	PerRound []float64 `json:"per_round"`
	Median   float64   `json:"median"`
}

// Add records a round. Metrics that are not finite numbers are left out
// (JSON has none).
func (r *Result) Add(system string, round int, m map[string]float64) {
	for k, v := range m {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			delete(m, k)
		}
	}
	r.Rounds = append(r.Rounds, Round{System: system, Round: round, Metrics: m})
	if !slices.Contains(r.Systems, system) {
		r.Systems = append(r.Systems, system)
	}
}

// MedianOf is the median of a system's metric over the measured rounds
// recorded so far (Summary's figure, before Finish computes it), and
// whether any round has it.
func (r *Result) MedianOf(system, metric string) (float64, bool) {
	var vs []float64
	for _, rd := range r.Rounds {
		if v, ok := rd.Metrics[metric]; ok && rd.System == system && rd.Round > 0 {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	return Median(vs), true
}

// Finish computes the summary and the ratios against Systems[0].
func (r *Result) Finish() {
	r.Seconds = time.Since(r.Started).Seconds()
	r.Summary = map[string]map[string]float64{}
	per := map[string]map[string][]float64{} // system -> metric -> by round order
	for _, rd := range r.Rounds {
		if rd.Round == 0 {
			continue
		}
		if per[rd.System] == nil {
			per[rd.System] = map[string][]float64{}
		}
		for k, v := range rd.Metrics {
			per[rd.System][k] = append(per[rd.System][k], v)
		}
	}
	for sys, ms := range per {
		r.Summary[sys] = map[string]float64{}
		for k, vs := range ms {
			r.Summary[sys][k] = Median(vs)
		}
	}
	if len(r.Systems) < 2 {
		return
	}
	self := r.Systems[0]
	r.Ratios = map[string]map[string]Ratio{}
	for _, peer := range r.Systems[1:] {
		r.Ratios[peer] = map[string]Ratio{}
		for k, mine := range per[self] {
			theirs := per[peer][k]
			var rs []float64
			for i := 0; i < len(mine) && i < len(theirs); i++ {
				if theirs[i] != 0 {
					rs = append(rs, mine[i]/theirs[i])
				}
			}
			if len(rs) > 0 {
				r.Ratios[peer][k] = Ratio{PerRound: rs, Median: Median(rs)}
			}
		}
	}
}

// Write writes dir/<scenario>.json.
func (r *Result) Write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, r.Scenario+".json")
	return p, os.WriteFile(p, append(b, '\n'), 0o644)
}

// ReadResults reads every result in dir, sorted by group and scenario.
func ReadResults(dir string) ([]*Result, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []*Result
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, &r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Scenario < out[j].Scenario
	})
	return out, nil
}

// Median of vs (NaN for none).
func Median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// Percentile is the p-th quantile of vs, nearest rank (NaN for none).
func Percentile(vs []float64, p float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1)]
}
