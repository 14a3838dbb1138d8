package admin

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// A change asked with ?dry_run=true is planned and checked as it would be
// made, and answered with its plan: for the addresses it reaches, every
// (protocol, port set) whose outcome changes, with the traffic the
// deciding binding carried recently. Nothing changes.

// Traffic is what a binding's addresses saw: connections and datagrams
// steered to a socket (or passed to the kernel), refused, and missed (the
// socket was missing or did not fit).
type Traffic struct {
	Steered uint64 `json:"steered"`
	Refused uint64 `json:"refused"`
	Missed  uint64 `json:"missed"`
}

// BindingTraffic is a binding's traffic since the node started counting
// it, and over the recent window.
type BindingTraffic struct {
	Total  Traffic `json:"total"`
	Recent Traffic `json:"recent"`
	// Window is the recent counts' span, such as "5m0s"; shorter while
	// the node has counted for less.
	Window string `json:"window"`
}

// Plan answers a dry run.
type Plan struct {
	DryRun bool `json:"dry_run"`
	// Revision is the state's revision the change was planned against.
	Revision int64 `json:"revision"`
	// Change is what the change would answer.
	Change any `json:"change"`
	// Rows are the outcome changes, in address order; none when the
	// change moves no traffic.
	Rows []PlanRow `json:"plan"`
	// Truncated says that more rows than maxPlanRows were found and
	// only the first are listed.
	Truncated bool `json:"truncated,omitempty"`
}

// PlanRow is a set of destinations that a change moves the same way.
type PlanRow struct {
	Ranges []string `json:"ranges"`
	// RangesTotal is how many ranges the row has when there are more
	// than the maxRowRanges listed.
	RangesTotal int        `json:"ranges_total,omitempty"`
	Ports       []string   `json:"ports"` // "tcp/443", "udp/1-442"
	Before      PlanEffect `json:"before"`
	After       PlanEffect `json:"after"`
	// Summary is the row in one line:
	// "127.1.1.128/25 tcp/80, tcp/443: cdn → refuse (no spectrum app)".
	Summary string `json:"summary"`
	// Traffic is what the binding that decides these destinations before
	// the change carried (all of its addresses and ports); absent outside
	// every prefix or where nothing is counted.
	Traffic *BindingTraffic `json:"traffic,omitempty"`
}

// PlanEffect is an outcome and what decides it.
type PlanEffect struct {
	Outcome   string `json:"outcome"`
	Service   string `json:"service,omitempty"`
	BindingID string `json:"binding_id,omitempty"`
	App       string `json:"app,omitempty"`
	Summary   string `json:"summary"` // "refuse (no spectrum app)"
}

// maxPlanRows bounds a plan's rows, and maxRowRanges the ranges a row
// lists.
const (
	maxPlanRows  = 1000
	maxRowRanges = 256
)

// dryRunRoutes are the changes a dry run plans.
var dryRunRoutes = map[string]bool{
	"POST /v1/prefixes":                                     true,
	"DELETE /v1/prefixes/{prefix_id}":                       true,
	"POST /v1/prefixes/{prefix_id}/bindings":                true,
	"PATCH /v1/prefixes/{prefix_id}/bindings/{binding_id}":  true,
	"DELETE /v1/prefixes/{prefix_id}/bindings/{binding_id}": true,
	"POST /v1/batch":                                        true,
}

// dryRunField reads ?dry_run= of a change on route pattern: false when
// absent.
func dryRunField(r *http.Request, pattern string) (bool, error) {
	v := r.URL.Query().Get("dry_run")
	if v == "" {
		return false, nil
	}
	dry, err := strconv.ParseBool(v)
	switch {
	case err != nil:
		return false, badField("dry_run", "%q is not true or false", v)
	case dry && strings.Contains(pattern, cfBase):
		return false, badField("dry_run", "the Cloudflare routes take no dry run: plan the change with ?dry_run=true on its /v1 route")
	case dry && !dryRunRoutes[pattern]:
		return false, badField("dry_run", "%s cannot be planned: dry runs plan creating and deleting prefixes, creating, moving and deleting bindings, and batches", pattern)
	}
	return dry, nil
}

// withDryRun returns r planning, not making, its change.
func withDryRun(r *http.Request) *http.Request {
	return r.WithContext(bindings.WithDryRun(r.Context(), &bindings.DryRun{}))
}

// dryRunOf returns r's dry run, or nil when r makes its change.
func dryRunOf(r *http.Request) *bindings.DryRun { return bindings.DryRunOf(r.Context()) }

// answer writes a change's result, or its plan when r is a dry run.
func (a *api) answer(w http.ResponseWriter, r *http.Request, result any) error {
	d := dryRunOf(r)
	if d == nil {
		return writeResult(w, result)
	}
	return writeResult(w, a.plan(d, result))
}

// plan is the answer to dry run d of a change that would answer result.
func (a *api) plan(d *bindings.DryRun, result any) Plan {
	out := Plan{DryRun: true, Revision: d.Revision, Change: result, Rows: []PlanRow{}}
	rows := bindings.Plan(d.Before, d.After, bindings.Changed(d.Before, d.After))
	if len(rows) > maxPlanRows {
		rows, out.Truncated = rows[:maxPlanRows], true
	}
	for _, row := range rows {
		j := PlanRow{Before: toEffect(row.Before), After: toEffect(row.After), Summary: row.String()}
		for i, p := range row.Ranges {
			if i == maxRowRanges {
				j.RangesTotal = len(row.Ranges)
				break
			}
			j.Ranges = append(j.Ranges, p.String())
		}
		for _, s := range row.Ports {
			j.Ports = append(j.Ports, s.String())
		}
		if row.Before.Binding != nil {
			j.Traffic = a.traffic(*row.Before.Binding)
		}
		out.Rows = append(out.Rows, j)
	}
	return out
}

func toEffect(e bindings.Effect) PlanEffect {
	j := PlanEffect{Outcome: string(e.Outcome), Service: string(e.Service), App: e.App, Summary: e.String()}
	if e.Binding != nil {
		j.BindingID = e.Binding.ID
	}
	return j
}

// traffic is binding b's traffic, or nil where nothing counts it.
func (a *api) traffic(b bindings.Binding) *BindingTraffic {
	if a.opts.Traffic == nil {
		return nil
	}
	total, recent, window, ok := a.opts.Traffic(b)
	if !ok {
		return nil
	}
	return &BindingTraffic{Total: total, Recent: recent, Window: window.Round(time.Second).String()}
}
