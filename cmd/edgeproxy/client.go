package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
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
	stderr    io.Writer
	// wait is --wait: how long a change's answer may wait for it to be
	// active everywhere; 0: not at all.
	wait time.Duration
	// dryRun is --dry-run: changes are planned and their plans printed,
	// not made.
	dryRun bool
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
	api := admin.NewClient(adminURL, token)
	// One id for the command's change, so that the audit log can tell
	// whether a change whose answer was lost was made.
	api.Header = http.Header{"X-Request-Id": {newRequestID()}}
	return &client{api: api, tokenFile: tokenFile, json: asJSON, stdout: stdout, stderr: io.Discard}, nil
}

// newRequestID returns a random request id: "cli-" and 16 hex characters.
func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return "cli-" + hex.EncodeToString(b[:])
}

// mutating reports whether method changes state.
func mutating(method string) bool {
	return method == http.MethodPost || method == http.MethodPatch || method == http.MethodDelete
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
	case ae.Status == http.StatusServiceUnavailable && mutating(method):
		return fmt.Errorf("%v (request id %s: if the change may have been made, edgeproxy audit shows it with that id)", err, c.api.Header.Get("X-Request-Id"))
	}
	return err
}

// printJSON prints v indented, as the API writes it (no HTML escaping).
func (c *client) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
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

// minIDPrefix is the fewest characters of an id a command takes.
const minIDPrefix = 4

// idArg checks an ID argument: an id or a prefix of one, at least
// minIDPrefix hex characters; it returns it in lower case.
func idArg(kind, arg string) (string, error) {
	id := strings.ToLower(arg)
	if len(id) < minIDPrefix || len(id) > 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", usagef("ID: %q is not a %s id or a prefix of one: %d to 32 hex characters (see edgeproxy %s list)", arg, kind, minIDPrefix, plural(kind))
	}
	return id, nil
}

// plural is "bindings" for "binding", "prefixes" for "prefix".
func plural(kind string) string {
	if strings.HasSuffix(kind, "x") {
		return kind + "es"
	}
	return kind + "s"
}

// maxCandidates bounds the ids an ambiguous prefix's error lists.
const maxCandidates = 10

// pickID returns the item whose id is prefix, else the one whose id
// starts with it; none, or more than one (listed, each described), is an
// error naming the kind.
func pickID[T any](kind, prefix string, items []T, id func(T) string, describe func(T) string) (T, error) {
	var zero T
	var found []T
	for _, it := range items {
		switch {
		case id(it) == prefix:
			return it, nil
		case strings.HasPrefix(id(it), prefix):
			found = append(found, it)
		}
	}
	switch len(found) {
	case 0:
		return zero, fmt.Errorf("no %s with id prefix %s (see edgeproxy %s list)", kind, prefix, plural(kind))
	case 1:
		return found[0], nil
	}
	lines := make([]string, 0, maxCandidates+1)
	for i, it := range found {
		if i == maxCandidates {
			lines = append(lines, fmt.Sprintf("  and %d more", len(found)-maxCandidates))
			break
		}
		lines = append(lines, "  "+id(it)+"  "+describe(it))
	}
	return zero, fmt.Errorf("id prefix %s is ambiguous: %d %s have it (give more of the id):\n%s", prefix, len(found), plural(kind), strings.Join(lines, "\n"))
}

// bindingText is a binding as "CIDR SCOPE -> SERVICE".
func bindingText(b admin.Binding) string {
	return fmt.Sprintf("%s %s -> %s", b.CIDR, scope(b), b.ServiceID)
}

// findBinding resolves an ID argument to the binding it names, among every
// prefix's (binding ids are unique across prefixes).
func (c *client) findBinding(arg string) (admin.Binding, error) {
	prefix, err := idArg("binding", arg)
	if err != nil {
		return admin.Binding{}, err
	}
	_, all, err := c.allBindings()
	if err != nil {
		return admin.Binding{}, err
	}
	return pickID("binding", prefix, all, func(b admin.Binding) string { return b.ID }, bindingText)
}

// hinted is an error of the API followed by the command that does what
// its message asks for.
type hinted struct {
	err  error
	hint string
}

func (h hinted) Error() string { return h.err.Error() + "\n  " + h.hint }

func (h hinted) Unwrap() error { return h.err }

// apiError is err's *admin.Error, nil if it is none.
func apiError(err error) *admin.Error {
	var ae *admin.Error
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}

// bindingsFlags are the flags of a bindings command, those it takes set.
type bindingsFlags struct {
	adminURL, tokenFile *string
	asJSON              *bool
	port, drain, wait   *string
	canary              labelsFlag
	dryRun              *bool
}

func newBindingsFlags(sub string, stderr io.Writer) (*flag.FlagSet, *bindingsFlags) {
	fs := newFlags("bindings "+sub, stderr)
	f := &bindingsFlags{}
	f.adminURL, f.tokenFile, f.asJSON = clientFlags(fs)
	empty := ""
	f.port, f.drain, f.wait = &empty, &empty, &empty
	switch sub {
	case "add":
		f.port = fs.String("port", "", "port scope as `PROTO/PORT` (e.g. tcp/443): only that protocol and port move")
	case "move", "delete":
		f.drain = fs.String("drain", "", "close the connections still held on the addresses that left their service after `DURATION` (e.g. 30s); default: they stay until they end")
	}
	switch sub {
	case "add", "move", "delete", "promote", "rollback", "batch":
		f.wait = fs.String("wait", "", "wait up to `DURATION` (at most 30s) for the change to be active on every node in its scope")
	}
	f.dryRun = new(bool)
	switch sub {
	case "add", "move", "delete", "batch":
		f.dryRun = fs.Bool("dry-run", false, "plan the change and print what it would do to traffic; change nothing")
	}
	switch sub {
	case "add", "move":
		fs.Var(&f.canary, "canary", "make the change on the nodes whose labels match `KEY=VALUE` first (repeatable: all must match); promote or rollback it later")
	}
	return fs, f
}

// bindingsCommands are the subcommands of edgeproxy bindings.
var bindingsCommands = []string{"list", "add", "move", "delete", "promote", "rollback", "batch", "plan"}

// planCommands are the bindings commands edgeproxy bindings plan plans.
var planCommands = []string{"add", "move", "delete", "batch"}

func cmdBindings(args []string, stdout, stderr io.Writer) error {
	sub, rest, ok := splitWord(args)
	if !ok || !slices.Contains(bindingsCommands, sub) {
		return groupHelp("bindings", sub, args, stdout, stderr, bindingsCommands...)
	}
	if sub == "plan" {
		// bindings plan move ID SERVICE is bindings move --dry-run ID SERVICE.
		what, more, ok := splitWord(rest)
		if !ok || !slices.Contains(planCommands, what) {
			return groupHelp("bindings plan", what, rest, stdout, stderr, planCommands...)
		}
		return cmdBindings(append([]string{what, "--dry-run"}, more...), stdout, stderr)
	}
	fs, f := newBindingsFlags(sub, stderr)
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	wait, err := waitFlag(*f.wait)
	if err != nil {
		return err
	}
	c, err := newClient(*f.adminURL, *f.tokenFile, *f.asJSON, stdout)
	if err != nil {
		return err
	}
	c.stderr, c.wait, c.dryRun = stderr, wait, *f.dryRun
	if wait > 0 {
		c.api.HTTP = &http.Client{Timeout: wait + 30*time.Second}
	}
	args = fs.Args()
	want := map[string]int{"list": 0, "add": 2, "move": 2, "delete": 1, "promote": 1, "rollback": 1, "batch": 1}
	if len(args) != want[sub] {
		line := usageLine("bindings " + sub)
		if sub == "batch" {
			line += "  (- reads standard input; a line is CIDR SERVICE [PROTO/PORT])"
		}
		return usagef("%s", line)
	}
	switch sub {
	case "list":
		return c.list()
	case "add":
		return c.add(args[0], args[1], *f.port, f.canary)
	case "move":
		return c.move(args[0], args[1], *f.drain, f.canary)
	case "delete":
		return c.delete(args[0], *f.drain)
	case "promote", "rollback":
		return c.settleCanary(sub, args[0])
	default: // batch
		return c.batch(args[0])
	}
}

// groupHelp answers a command of subcommands given none, or one it does
// not have: with -h or --help and none, or "help", its usage on stdout;
// else its usage on stderr and a usage error.
func groupHelp(group, sub string, args []string, stdout, stderr io.Writer, subs ...string) error {
	u := groupUsage(group, subs...)
	if sub == "help" || sub == "" && hasFlag(args, "help", "h") {
		fmt.Fprint(stdout, u)
		return nil
	}
	fmt.Fprint(stderr, u)
	if sub == "" {
		return usagef("%s: no command (one of %s)", group, strings.Join(subs, ", "))
	}
	return usagef("unknown %s command %q (one of %s)", group, sub, strings.Join(subs, ", "))
}

// maxWait is the API's bound on ?wait=.
const maxWait = 30 * time.Second

// waitFlag checks --wait: a duration above 0 and at most maxWait; empty: 0.
func waitFlag(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, usagef("--wait: %q is not a duration (such as 5s)", v)
	case d <= 0 || d > maxWait:
		return 0, usagef("--wait: %s is out of range: above 0 and at most %s", d, maxWait)
	}
	return d, nil
}

// labelsFlag is a repeatable KEY=VALUE flag.
type labelsFlag map[string]string

func (l *labelsFlag) String() string {
	if l == nil || len(*l) == 0 {
		return ""
	}
	return labelsText(*l)
}

func (l *labelsFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" || val == "" {
		return fmt.Errorf("%q is not KEY=VALUE (such as role=canary)", v)
	}
	if *l == nil {
		*l = labelsFlag{}
	}
	if old, dup := (*l)[k]; dup && old != val {
		return fmt.Errorf("%q: label %s is already %s", v, k, old)
	}
	(*l)[k] = val
	return nil
}

// labelsText is labels as k=v,k=v, sorted; "-" for none.
func labelsText(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

// binding is a binding with its canary change, if it has one.
type binding struct {
	admin.Binding
	Canary *admin.Canary `json:"canary,omitempty"`
}

// path is the binding's path in the API.
func (b binding) path() string { return "/v1/prefixes/" + b.PrefixID + "/bindings/" + b.ID }

// query is ?wait= when --wait was given.
func (c *client) query() string {
	if c.wait == 0 {
		return ""
	}
	return "?" + url.Values{"wait": {c.wait.String()}}.Encode()
}

// stateText says how far a change has reached: "active", "pending: 2/3
// nodes hold it", "failed on n3 (reason)", "canary: 1/1 nodes hold it".
func stateText(p admin.Provisioning) string {
	switch p.State {
	case bindings.Pending, "canary":
		return fmt.Sprintf("%s: %d/%d nodes hold it", p.State, p.NodesApplied, p.NodesTotal)
	case bindings.Failed:
		failed := make([]string, len(p.NodesFailed))
		for i, n := range p.NodesFailed {
			failed[i] = n
			if why := p.Errors[n]; why != "" {
				failed[i] += " (" + why + ")"
			}
		}
		return fmt.Sprintf("failed on %s; %d/%d nodes hold it", strings.Join(failed, ", "), p.NodesApplied, p.NodesTotal)
	}
	return p.State
}

// outcome turns the provisioning a change reached into the command's
// result: a failed change is an error (exit 1; the store holds it, the
// nodes named refused it); one still pending after --wait is a note on
// stderr (exit 0: it is stored and reaches the others as they catch up).
func (c *client) outcome(p admin.Provisioning) error {
	switch {
	case p.State == bindings.Failed:
		return fmt.Errorf("revision %d is stored, but %d node(s) refused it: %s", p.Revision, len(p.NodesFailed), strings.Join(p.NodesFailed, ", "))
	case p.State == bindings.Pending && c.wait > 0:
		fmt.Fprintf(c.stderr, "edgeproxy: revision %d still pending after %s: it is stored; the nodes behind take it as they catch up (edgeproxy nodes)\n", p.Revision, c.wait)
	}
	return nil
}

// show prints a change's result: the JSON, or line; then its outcome.
func (c *client) show(v any, p admin.Provisioning, line string) error {
	if c.json {
		if err := c.printJSON(v); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(c.stdout, line)
	}
	return c.outcome(p)
}

// canaryText is ", canary on k=v" for a binding with a canary change.
func canaryText(b binding) string {
	if b.Canary == nil {
		return ""
	}
	return fmt.Sprintf(", canary %s on %s", b.Canary.ServiceID, labelsText(b.Canary.Labels))
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
	fmt.Fprintln(tw, "ID\tPREFIX\tCIDR\tPORT\tSERVICE\tSOURCE\tKIND")
	for _, b := range all {
		kind := "binding"
		if b.Default {
			kind = "prefix default"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.PrefixID, b.CIDR, scope(b), b.ServiceID, b.Source, kind)
	}
	return tw.Flush()
}

// parseCIDR parses a CIDR argument; a bare address is its /32 or /128.
func parseCIDR(arg string) (netip.Prefix, error) {
	s := strings.TrimSpace(arg)
	if a, err := netip.ParseAddr(s); err == nil && !strings.Contains(s, "/") && a.Zone() == "" {
		s = netip.PrefixFrom(a, a.BitLen()).String()
	}
	cidr, err := bindings.ParseCIDR(s)
	if err != nil {
		return netip.Prefix{}, usagef("CIDR: %v", err)
	}
	return cidr, nil
}

// bindingBody checks a new binding's CIDR, service and port scope and
// returns its body.
func bindingBody(cidrArg, svcArg, portArg string) (netip.Prefix, map[string]any, error) {
	cidr, err := parseCIDR(cidrArg)
	if err != nil {
		return netip.Prefix{}, nil, err
	}
	if _, err := bindings.ParseService(svcArg); err != nil {
		return netip.Prefix{}, nil, usagef("SERVICE: %v", err)
	}
	body := map[string]any{"cidr": cidr.String(), "service_id": svcArg}
	if portArg != "" {
		proto, port, err := bindings.ParseProtoPort(portArg)
		if err != nil {
			return netip.Prefix{}, nil, usagef("--port: %v", err)
		}
		body["protocol"], body["port"] = proto.String(), port
	}
	return cidr, body, nil
}

func (c *client) add(cidrArg, svcArg, portArg string, canary labelsFlag) error {
	cidr, body, err := bindingBody(cidrArg, svcArg, portArg)
	if err != nil {
		return err
	}
	if len(canary) > 0 {
		body["canary"] = map[string]any{"labels": canary}
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
	if c.dryRun {
		if err := c.plan("POST", "/v1/prefixes/"+prefix.ID+"/bindings", body); err != nil {
			return c.addHint(err, prefix.ID, cidr, portArg, svcArg)
		}
		return nil
	}
	var b binding
	if err := c.do("POST", "/v1/prefixes/"+prefix.ID+"/bindings"+c.query(), body, &b); err != nil {
		return c.addHint(err, prefix.ID, cidr, portArg, svcArg)
	}
	return c.show(b, b.Provisioning, fmt.Sprintf("added %s %s -> %s (id %s, in prefix %s%s; %s)", b.CIDR, scope(b.Binding), b.ServiceID, b.ID, prefix.CIDR, canaryText(b), stateText(b.Provisioning)))
}

// addHint follows an add the API refused as a conflict on its cidr with
// the command that moves the binding already there (the prefix's default
// binding, or one of the same addresses and scope) to the service asked,
// if the API made it (the file's are changed in the file).
func (c *client) addHint(err error, prefixID string, cidr netip.Prefix, portArg, svc string) error {
	if ae := apiError(err); ae == nil || !ae.Has(admin.CodeConflict, "cidr") {
		return err
	}
	var proto dispatch.Protocol
	var port uint16
	if portArg != "" {
		proto, port, _ = bindings.ParseProtoPort(portArg)
	}
	id := bindings.BindingID(cidr, proto, port)
	var bs []admin.Binding
	if c.do("GET", "/v1/prefixes/"+prefixID+"/bindings", nil, &bs) != nil {
		return err
	}
	for _, b := range bs {
		if b.ID == id && b.Source == string(bindings.FromAPI) {
			return hinted{err, fmt.Sprintf("to steer it to %s: edgeproxy bindings move %s %s", svc, b.ID, svc)}
		}
	}
	return err
}

func (c *client) move(id, svcArg, drain string, canary labelsFlag) error {
	if _, err := bindings.ParseService(svcArg); err != nil {
		return usagef("SERVICE: %v", err)
	}
	b, err := c.findBinding(id)
	if err != nil {
		return err
	}
	var moved binding
	body := map[string]any{"service_id": svcArg}
	if drain != "" {
		body["drain"] = drain
	}
	if len(canary) > 0 {
		body["canary"] = map[string]any{"labels": canary}
	}
	if c.dryRun {
		return c.plan("PATCH", "/v1/prefixes/"+b.PrefixID+"/bindings/"+b.ID, body)
	}
	if err := c.do("PATCH", "/v1/prefixes/"+b.PrefixID+"/bindings/"+b.ID+c.query(), body, &moved); err != nil {
		return err
	}
	line := fmt.Sprintf("moved %s %s from %s to %s (id %s; %s)", moved.CIDR, scope(moved.Binding), b.ServiceID, moved.ServiceID, moved.ID, stateText(moved.Provisioning))
	if moved.Canary != nil {
		line = fmt.Sprintf("moved %s %s from %s to %s on the canary nodes %s (id %s; %s)", moved.CIDR, scope(moved.Binding), b.ServiceID, moved.Canary.ServiceID, labelsText(moved.Canary.Labels), moved.ID, stateText(moved.Provisioning))
	}
	return c.show(moved, moved.Provisioning, line)
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
	if c.dryRun {
		return c.plan("DELETE", "/v1/prefixes/"+b.PrefixID+"/bindings/"+b.ID, body)
	}
	if err := c.do("DELETE", "/v1/prefixes/"+b.PrefixID+"/bindings/"+b.ID+c.query(), body, &deleted); err != nil {
		if ae := apiError(err); ae != nil && b.Default && b.Source == string(bindings.FromAPI) && ae.Has(admin.CodeConflict, "binding_id") {
			return hinted{err, "to delete the prefix and everything inside it: edgeproxy prefixes delete " + b.PrefixID + " --cascade"}
		}
		return err
	}
	return c.show(deleted, deleted.Provisioning, fmt.Sprintf("deleted %s %s -> %s (id %s; %s)", deleted.CIDR, scope(deleted), deleted.ServiceID, deleted.ID, stateText(deleted.Provisioning)))
}

// settleCanary promotes a binding's canary change to every node or rolls
// it back.
func (c *client) settleCanary(action, id string) error {
	found, err := c.findBinding(id)
	if err != nil {
		return err
	}
	b := binding{Binding: found}
	var after binding
	if err := c.do("POST", b.path()+"/"+action+c.query(), nil, &after); err != nil {
		return err
	}
	line := fmt.Sprintf("promoted %s %s: %s on every node (id %s; %s)", after.CIDR, scope(after.Binding), after.ServiceID, after.ID, stateText(after.Provisioning))
	if action == "rollback" {
		line = fmt.Sprintf("rolled back the canary of %s %s: %s on every node (id %s; %s)", after.CIDR, scope(after.Binding), after.ServiceID, after.ID, stateText(after.Provisioning))
	}
	return c.show(after, after.Provisioning, line)
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
