package main

import (
	"fmt"
	"io"
	"net/url"
	"slices"
	"text/tabwriter"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bindings"
)

// The prefix commands: edgeproxy prefixes list, add, delete.

// prefixesCommands are the subcommands of edgeproxy prefixes.
var prefixesCommands = []string{"list", "add", "delete"}

func cmdPrefixes(args []string, stdout, stderr io.Writer) error {
	sub, rest, ok := splitWord(args)
	if !ok || !slices.Contains(prefixesCommands, sub) {
		return groupHelp("prefixes", sub, args, stdout, stderr, prefixesCommands...)
	}
	fs := newFlags("prefixes "+sub, stderr)
	adminURL, tokenFile, asJSON := clientFlags(fs)
	cascade, dryRun := new(bool), new(bool)
	if sub == "delete" {
		cascade = fs.Bool("cascade", false, "delete the bindings inside the prefix too (without it, a prefix with bindings is refused)")
	}
	if sub == "add" || sub == "delete" {
		dryRun = fs.Bool("dry-run", false, "plan the change and print what it would do to traffic; change nothing")
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	want := map[string]int{"list": 0, "add": 2, "delete": 1}
	if fs.NArg() != want[sub] {
		return usagef("%s", usageLine("prefixes "+sub))
	}
	c, err := newClient(*adminURL, *tokenFile, *asJSON, stdout)
	if err != nil {
		return err
	}
	c.stderr, c.dryRun = stderr, *dryRun
	switch sub {
	case "list":
		return c.listPrefixes()
	case "add":
		return c.addPrefix(fs.Arg(0), fs.Arg(1))
	default: // delete
		return c.deletePrefix(fs.Arg(0), *cascade)
	}
}

// prefixRow is a prefix as prefixes list shows it: the API's, and how many
// bindings it holds besides its default one.
type prefixRow struct {
	admin.Prefix
	Bindings int `json:"bindings"`
}

// prefixRows lists every prefix with its count of bindings.
func (c *client) prefixRows() ([]prefixRow, error) {
	ps, all, err := c.allBindings()
	if err != nil {
		return nil, err
	}
	rows := make([]prefixRow, len(ps))
	for i, p := range ps {
		rows[i].Prefix = p
		for _, b := range all {
			if b.PrefixID == p.ID && !b.Default {
				rows[i].Bindings++
			}
		}
	}
	return rows, nil
}

func (c *client) listPrefixes() error {
	rows, err := c.prefixRows()
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintln(c.stdout, "no prefixes are onboarded")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCIDR\tSERVICE\tSOURCE\tBINDINGS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", r.ID, r.CIDR, r.ServiceID, r.Source, r.Bindings)
	}
	return tw.Flush()
}

func (c *client) addPrefix(cidrArg, svcArg string) error {
	cidr, err := parseCIDR(cidrArg)
	if err != nil {
		return err
	}
	if _, err := bindings.ParseService(svcArg); err != nil {
		return usagef("SERVICE: %v", err)
	}
	body := map[string]any{"cidr": cidr.String(), "service_id": svcArg}
	if c.dryRun {
		return c.plan("POST", "/v1/prefixes", body)
	}
	var p admin.Prefix
	if err := c.do("POST", "/v1/prefixes", body, &p); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(p)
	}
	fmt.Fprintf(c.stdout, "added prefix %s -> %s (id %s)\n", p.CIDR, p.ServiceID, p.ID)
	return nil
}

// findPrefix resolves an ID argument to the prefix it names.
func (c *client) findPrefix(arg string) (prefixRow, error) {
	prefix, err := idArg("prefix", arg)
	if err != nil {
		return prefixRow{}, err
	}
	rows, err := c.prefixRows()
	if err != nil {
		return prefixRow{}, err
	}
	return pickID("prefix", prefix, rows, func(r prefixRow) string { return r.ID }, func(r prefixRow) string {
		return fmt.Sprintf("%s -> %s", r.CIDR, r.ServiceID)
	})
}

func (c *client) deletePrefix(arg string, cascade bool) error {
	p, err := c.findPrefix(arg)
	if err != nil {
		return err
	}
	path := "/v1/prefixes/" + p.ID
	if cascade {
		path += "?" + url.Values{"cascade": {"true"}}.Encode()
	}
	if c.dryRun {
		return c.plan("DELETE", path, nil)
	}
	var gone admin.Prefix
	if err := c.do("DELETE", path, nil, &gone); err != nil {
		if ae := apiError(err); ae != nil && ae.Has(admin.CodeHasBindings, "") {
			return hinted{err, "to delete them with it: edgeproxy prefixes delete " + p.ID + " --cascade"}
		}
		return err
	}
	if c.json {
		return c.printJSON(gone)
	}
	with := ""
	if cascade && p.Bindings > 0 {
		with = fmt.Sprintf(" and its %d binding(s)", p.Bindings)
	}
	fmt.Fprintf(c.stdout, "deleted prefix %s -> %s (id %s)%s\n", gone.CIDR, gone.ServiceID, gone.ID, with)
	return nil
}
