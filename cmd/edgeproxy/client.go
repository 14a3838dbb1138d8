package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bindings"
)

// defaultAdmin is the admin API's address unless --admin or EDGEPROXY_ADMIN
// say otherwise.
const defaultAdmin = "http://127.0.0.1:9180"

// client talks to a running instance's admin API.
type client struct {
	api       *admin.Client
	tokenFile string
	json      bool
	stdout    io.Writer
}

// clientFlags adds the flags every client command takes.
func clientFlags(fs *flag.FlagSet) (admin, tokenFile *string, asJSON *bool) {
	admin = fs.String("admin", "", "admin API `URL` (default $EDGEPROXY_ADMIN, else "+defaultAdmin+")")
	tokenFile = fs.String("token-file", "", "`file` holding the bearer token for changes")
	asJSON = fs.Bool("json", false, "print the API's result as JSON")
	return
}

func newClient(adminURL, tokenFile string, asJSON bool, stdout io.Writer) (*client, error) {
	if adminURL == "" {
		adminURL = os.Getenv("EDGEPROXY_ADMIN")
	}
	if adminURL == "" {
		adminURL = defaultAdmin
	}
	var token string
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return &client{api: admin.NewClient(adminURL, token), tokenFile: tokenFile, json: asJSON, stdout: stdout}, nil
}

// do calls the API and decodes the result into out (if not nil). Errors say
// what the user can do about them.
func (c *client) do(method, path string, body, out any) error {
	err := c.api.Do(method, path, body, out)
	var ue *admin.UnreachableError
	var ae *admin.Error
	switch {
	case errors.As(err, &ue):
		return fmt.Errorf("%v (is edgeproxy running? set --admin or EDGEPROXY_ADMIN)", err)
	case !errors.As(err, &ae):
		return err
	case ae.Status == http.StatusUnauthorized:
		return fmt.Errorf("the admin API needs a token for this call: pass --token-file FILE (%s)", ae.Message())
	case ae.Status == http.StatusForbidden:
		return fmt.Errorf("the admin API refused the token in %s (%s)", c.tokenFile, ae.Message())
	}
	return err
}

// printJSON prints v indented.
func (c *client) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// scope is a binding's protocol and port, "*" for all.
func scope(b admin.Binding) string {
	if b.Protocol == "" {
		return "*"
	}
	return fmt.Sprintf("%s/%d", b.Protocol, b.Port)
}

// allBindings lists every binding of every prefix.
func (c *client) allBindings() ([]admin.Prefix, []admin.Binding, error) {
	var ps []admin.Prefix
	if err := c.do("GET", "/v1/prefixes", nil, &ps); err != nil {
		return nil, nil, err
	}
	var all []admin.Binding
	for _, p := range ps {
		var bs []admin.Binding
		if err := c.do("GET", "/v1/prefixes/"+p.ID+"/bindings", nil, &bs); err != nil {
			return nil, nil, err
		}
		all = append(all, bs...)
	}
	return ps, all, nil
}

func (c *client) findBinding(id string) (admin.Binding, error) {
	_, all, err := c.allBindings()
	if err != nil {
		return admin.Binding{}, err
	}
	for _, b := range all {
		if b.ID == id {
			return b, nil
		}
	}
	return admin.Binding{}, fmt.Errorf("no binding has id %q (see edgeproxy bindings list)", id)
}

func cmdBindings(args []string, stdout, stderr io.Writer) error {
	const usage = "usage: edgeproxy bindings list | add [--port tcp/443] CIDR SERVICE | move [--drain 30s] ID SERVICE | delete [--drain 30s] ID  (flags: --admin URL --token-file F --json)"
	if len(args) == 0 {
		return usagef("%s", usage)
	}
	sub, rest := args[0], args[1:]
	fs := newFlags("bindings "+sub, stderr)
	adminURL, tokenFile, asJSON := clientFlags(fs)
	var port, drain *string
	switch sub {
	case "add":
		port = fs.String("port", "", "port scope as `PROTO/PORT` (e.g. tcp/443): only that protocol and port move")
	case "move", "delete":
		drain = fs.String("drain", "", "close the connections still held on the addresses that left their service after `DURATION` (e.g. 30s); default: they stay until they end")
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	c, err := newClient(*adminURL, *tokenFile, *asJSON, stdout)
	if err != nil {
		return err
	}
	args = fs.Args()
	switch sub {
	case "list":
		if len(args) != 0 {
			return usagef("bindings list takes no arguments")
		}
		return c.list()
	case "add":
		if len(args) != 2 {
			return usagef("usage: edgeproxy bindings add [--port tcp/443] CIDR SERVICE")
		}
		return c.add(args[0], args[1], *port)
	case "move":
		if len(args) != 2 {
			return usagef("usage: edgeproxy bindings move [--drain 30s] ID SERVICE")
		}
		return c.move(args[0], args[1], *drain)
	case "delete":
		if len(args) != 1 {
			return usagef("usage: edgeproxy bindings delete [--drain 30s] ID")
		}
		return c.delete(args[0], *drain)
	}
	return usagef("unknown bindings command %q; %s", sub, usage)
}

func (c *client) list() error {
	ps, all, err := c.allBindings()
	if err != nil {
		return err
	}
	if c.json {
		if all == nil {
			all = []admin.Binding{}
		}
		return c.printJSON(all)
	}
	if len(ps) == 0 {
		fmt.Fprintln(c.stdout, "no prefixes are onboarded")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCIDR\tPORT\tSERVICE\tSOURCE\tKIND")
	for _, b := range all {
		kind := "binding"
		if b.Default {
			kind = "prefix default"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.CIDR, scope(b), b.ServiceID, b.Source, kind)
	}
	return tw.Flush()
}

func (c *client) add(cidrArg, svcArg, portArg string) error {
	cidr, err := bindings.ParseCIDR(cidrArg)
	if err != nil {
		return usagef("CIDR: %v", err)
	}
	if _, err := bindings.ParseService(svcArg); err != nil {
		return usagef("SERVICE: %v", err)
	}
	body := map[string]any{"cidr": cidr.String(), "service_id": svcArg}
	if portArg != "" {
		proto, port, err := bindings.ParseProtoPort(portArg)
		if err != nil {
			return usagef("--port: %v", err)
		}
		body["protocol"], body["port"] = proto.String(), port
	}
	var ps []admin.Prefix
	if err := c.do("GET", "/v1/prefixes", nil, &ps); err != nil {
		return err
	}
	var prefix *admin.Prefix
	for i, p := range ps {
		pc, err := netip.ParsePrefix(p.CIDR)
		if err == nil && pc.Bits() <= cidr.Bits() && pc.Contains(cidr.Addr()) {
			prefix = &ps[i]
		}
	}
	if prefix == nil {
		return fmt.Errorf("%s is not inside any onboarded prefix (see edgeproxy bindings list)", cidr)
	}
	var b admin.Binding
	if err := c.do("POST", "/v1/prefixes/"+prefix.ID+"/bindings", body, &b); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(b)
	}
	fmt.Fprintf(c.stdout, "added %s %s -> %s (id %s, in prefix %s; %s)\n", b.CIDR, scope(b), b.ServiceID, b.ID, prefix.CIDR, b.Provisioning.State)
	return nil
}

func (c *client) move(id, svcArg, drain string) error {
	if _, err := bindings.ParseService(svcArg); err != nil {
		return usagef("SERVICE: %v", err)
	}
	b, err := c.findBinding(id)
	if err != nil {
		return err
	}
	var moved admin.Binding
	body := map[string]string{"service_id": svcArg}
	if drain != "" {
		body["drain"] = drain
	}
	if err := c.do("PATCH", "/v1/prefixes/"+b.PrefixID+"/bindings/"+id, body, &moved); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(moved)
	}
	fmt.Fprintf(c.stdout, "moved %s %s from %s to %s (id %s; %s)\n", moved.CIDR, scope(moved), b.ServiceID, moved.ServiceID, moved.ID, moved.Provisioning.State)
	return nil
}

func (c *client) delete(id, drain string) error {
	b, err := c.findBinding(id)
	if err != nil {
		return err
	}
	var deleted admin.Binding
	var body any
	if drain != "" {
		body = map[string]string{"drain": drain}
	}
	if err := c.do("DELETE", "/v1/prefixes/"+b.PrefixID+"/bindings/"+id, body, &deleted); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(deleted)
	}
	fmt.Fprintf(c.stdout, "deleted %s %s -> %s (id %s)\n", deleted.CIDR, scope(deleted), deleted.ServiceID, deleted.ID)
	return nil
}

func cmdLookup(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("lookup", stderr)
	adminURL, tokenFile, asJSON := clientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("usage: edgeproxy lookup [--admin URL] [--json] ADDR:PORT/PROTO (e.g. 192.0.2.1:443/tcp)")
	}
	arg := fs.Arg(0)
	addr, proto, ok := strings.Cut(arg, "/")
	if !ok {
		proto = "tcp"
	}
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return usagef("lookup: %q is not ADDR:PORT/PROTO (e.g. 192.0.2.1:443/tcp or [2001:db8::1]:443/udp)", arg)
	}
	c, err := newClient(*adminURL, *tokenFile, *asJSON, stdout)
	if err != nil {
		return err
	}
	var res admin.Lookup
	q := url.Values{"addr": {addr}, "protocol": {proto}}
	if err := c.do("GET", "/v1/lookup?"+q.Encode(), nil, &res); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(res)
	}
	fmt.Fprintf(stdout, "%s/%s: %s\n", addr, proto, res.Outcome)
	if res.Binding != nil {
		kind := "binding"
		if res.Binding.Default {
			kind = "prefix default"
		}
		fmt.Fprintf(stdout, "  binding: %s %s %s -> %s (%s, %s)\n", res.Binding.ID, res.Binding.CIDR, scope(*res.Binding), res.Binding.ServiceID, kind, res.Binding.Source)
	}
	if res.App != nil {
		fmt.Fprintf(stdout, "  app:     %s (%s %s ports %s)\n", res.App.Name, res.App.Protocol, res.App.Edge, res.App.Ports)
	}
	fmt.Fprintf(stdout, "  why:     %s\n", res.Reason)
	return nil
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	adminURL, tokenFile, asJSON := clientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("usage: edgeproxy status [--admin URL] [--json]")
	}
	c, err := newClient(*adminURL, *tokenFile, *asJSON, stdout)
	if err != nil {
		return err
	}
	var st admin.Status
	if err := c.do("GET", "/v1/status", nil, &st); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(st)
	}
	node := st.Node
	if node == "" {
		node = "(no node name)"
	}
	fmt.Fprintf(stdout, "%s: %s, pid %d, version %s, started %s (%s ago)\n", node, st.State, st.PID, st.Version,
		st.StartedAt.UTC().Format(time.RFC3339), time.Since(st.StartedAt).Round(time.Second))
	if u := st.Upgrades; u.Generation+u.OK+u.Failed > 0 {
		fmt.Fprintf(stdout, "upgrades: generation %d; from this process %d ok, %d failed\n", u.Generation, u.OK, u.Failed)
		if u.LastError != "" {
			fmt.Fprintf(stdout, "the last failed upgrade: %s\n", u.LastError)
		}
	}
	return nil
}
