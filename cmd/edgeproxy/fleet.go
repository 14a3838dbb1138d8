package main

import (
	"bufio"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bindings"
)

// The fleet's commands: nodes, fleet, audit, and bindings batch.

func cmdNodes(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("nodes", stderr)
	adminURL, tokenFile, asJSON := clientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("usage: edgeproxy nodes [--admin URL] [--json]")
	}
	c, err := newClient(*adminURL, *tokenFile, *asJSON, stdout)
	if err != nil {
		return err
	}
	var nodes []admin.Node
	if err := c.do("GET", "/v1/nodes", nil, &nodes); err != nil {
		return err
	}
	if c.json {
		if nodes == nil {
			nodes = []admin.Node{}
		}
		return c.printJSON(nodes)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tLABELS\tLIVE\tREVISION\tSTATE\tERROR")
	for _, n := range nodes {
		live := "yes"
		if !n.Live {
			live = "no"
		}
		errText := n.Error
		if errText == "" {
			errText = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", n.ID, labelsText(n.Labels), live, n.Revision, n.State, errText)
	}
	return tw.Flush()
}

func cmdFleet(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet", stderr)
	adminURL, tokenFile, asJSON := clientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("usage: edgeproxy fleet [--admin URL] [--json]")
	}
	c, err := newClient(*adminURL, *tokenFile, *asJSON, stdout)
	if err != nil {
		return err
	}
	var f admin.Fleet
	if err := c.do("GET", "/v1/fleet", nil, &f); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(f)
	}
	node := f.Node
	if node == "" {
		node = "this node"
	}
	stale := ""
	if f.Stale {
		stale = "; STALE: etcd cannot be reached, this node serves the last state it applied"
	}
	fmt.Fprintf(stdout, "%d node(s) as %s sees them: state at revision %d, applied here %d%s\n", f.Nodes, node, f.Revision, f.Applied, stale)
	fmt.Fprintf(stdout, "nodes by state: %s\n", labelsText(countsText(f.States)))
	if len(f.Endpoints) > 0 {
		fmt.Fprintf(stdout, "etcd: %s\n", strings.Join(f.Endpoints, ", "))
	}
	return nil
}

// countsText is a count per state as strings, for labelsText.
func countsText(states map[string]int) map[string]string {
	out := make(map[string]string, len(states))
	for k, n := range states {
		out[k] = strconv.Itoa(n)
	}
	return out
}

func cmdAudit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit", stderr)
	adminURL, tokenFile, asJSON := clientFlags(fs)
	since := fs.Int64("since", 0, "list the changes after `REVISION`")
	limit := fs.Int("limit", 0, "list at most `N` changes (the API's default: 1000)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("usage: edgeproxy audit [--since REV] [--limit N] [--admin URL] [--json]")
	}
	if *since < 0 {
		return usagef("--since: %d is not a revision (0 or more)", *since)
	}
	if *limit < 0 {
		return usagef("--limit: %d is not a count (1 or more)", *limit)
	}
	c, err := newClient(*adminURL, *tokenFile, *asJSON, stdout)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *since > 0 {
		q.Set("since", strconv.FormatInt(*since, 10))
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	path := "/v1/audit"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var es []bindings.AuditEntry
	if err := c.do("GET", path, nil, &es); err != nil {
		return err
	}
	if c.json {
		if es == nil {
			es = []bindings.AuditEntry{}
		}
		return c.printJSON(es)
	}
	for _, e := range es {
		fmt.Fprintln(stdout, auditLine(e))
	}
	return nil
}

// auditLine is an entry as one line: revision, time, who, action, the
// binding before -> after.
func auditLine(e bindings.AuditEntry) string {
	line := fmt.Sprintf("%d %s %s %s %s -> %s", e.Revision, e.Time.UTC().Format(time.RFC3339), e.Who, e.Action, auditItemText(e.Before), auditItemText(e.After))
	if e.Count > 0 {
		line += fmt.Sprintf(" (%d items)", e.Count)
	}
	if e.Node != "" {
		line += " via " + e.Node
	}
	return line
}

// auditItemText is an item as "CIDR SCOPE SERVICE", "-" for none.
func auditItemText(it *bindings.AuditItem) string {
	if it == nil {
		return "-"
	}
	sc := "*"
	if it.Protocol != "" {
		sc = fmt.Sprintf("%s/%d", it.Protocol, it.Port)
	}
	return fmt.Sprintf("%s %s %s", it.CIDR, sc, it.Service)
}

// maxBatchLines bounds a batch file, well above what one request body
// holds.
const maxBatchLines = 100000

// readBatch reads a batch file: one binding a line, "CIDR SERVICE" or
// "CIDR SERVICE PROTO/PORT"; blank lines and lines starting with # are
// skipped. Errors name the line.
func readBatch(r io.Reader, name string) ([]map[string]any, error) {
	var out []map[string]any
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 && len(f) != 3 {
			return nil, usagef("%s:%d: %q is not CIDR SERVICE [PROTO/PORT]", name, n, line)
		}
		port := ""
		if len(f) == 3 {
			port = f[2]
		}
		_, body, err := bindingBody(f[0], f[1], port)
		if err != nil {
			return nil, usagef("%s:%d: %s", name, n, strings.Replace(err.Error(), "--port", "PROTO/PORT", 1))
		}
		if len(out) == maxBatchLines {
			return nil, usagef("%s: more than %d bindings", name, maxBatchLines)
		}
		out = append(out, body)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if len(out) == 0 {
		return nil, usagef("%s: no bindings (a line is CIDR SERVICE [PROTO/PORT])", name)
	}
	return out, nil
}

// batch adds every binding of file ("-": standard input) in one change.
func (c *client) batch(file string) error {
	r, name := io.Reader(os.Stdin), "stdin"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("batch: %v", err)
		}
		defer f.Close()
		r, name = f, file
	}
	items, err := readBatch(r, name)
	if err != nil {
		return err
	}
	if c.dryRun {
		return c.plan("POST", "/v1/batch", map[string]any{"bindings": items})
	}
	var res admin.BatchResult
	if err := c.do("POST", "/v1/batch"+c.query(), map[string]any{"bindings": items}, &res); err != nil {
		return err
	}
	return c.show(res, res.Provisioning, fmt.Sprintf("added %d binding(s) from %s at revision %d (%s)", res.Count, name, res.Revision, stateText(res.Provisioning)))
}
