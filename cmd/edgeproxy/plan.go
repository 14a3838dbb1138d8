package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/edgeproxy/edgeproxy/admin"
)

// Plans: a change asked with --dry-run (or as edgeproxy bindings plan …)
// is planned and checked by the node, which changes nothing and answers
// what the change would do to traffic.

// dryRunPath is path asking for a plan instead of the change.
func dryRunPath(path string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + url.Values{"dry_run": {"true"}}.Encode()
}

// plan asks the API to plan the change method path body and prints the
// plan.
func (c *client) plan(method, path string, body any) error {
	var p admin.Plan
	if err := c.do(method, dryRunPath(path), body, &p); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(p)
	}
	fmt.Fprint(c.stdout, planText(p))
	return nil
}

// planText is a plan as the CLI prints it: a line per row, and under it
// the traffic of the binding that decides those addresses now.
func planText(p admin.Plan) string {
	var b strings.Builder
	if len(p.Rows) == 0 {
		fmt.Fprintf(&b, "plan at revision %d: no destination changes its outcome (nothing was changed)\n", p.Revision)
		return b.String()
	}
	fmt.Fprintf(&b, "plan at revision %d (nothing was changed; without --dry-run the change makes these):\n", p.Revision)
	for _, r := range p.Rows {
		fmt.Fprintf(&b, "  %s\n", r.Summary)
		if t := r.Traffic; t != nil {
			fmt.Fprintf(&b, "      now by binding %s: %s in the last %s (%s since counted)\n", short(r.Before.BindingID), trafficText(t.Recent), t.Window, trafficText(t.Total))
		}
	}
	if p.Truncated {
		fmt.Fprintf(&b, "  (more rows than the %d shown: see --json)\n", len(p.Rows))
	}
	return b.String()
}

func trafficText(t admin.Traffic) string {
	return fmt.Sprintf("%d steered, %d refused, %d missed", t.Steered, t.Refused, t.Missed)
}

// short is the start of an id, enough to name it on the command line.
func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
