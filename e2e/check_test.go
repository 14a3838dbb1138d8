package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
	"github.com/edgeproxy/edgeproxy/store"
)

// TestCheckStore: check validates the store's items together with the
// file's; a store a running node holds is not waited for: check says who
// holds it, that its items were not checked, and exits 0.
func TestCheckStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bindings.db")
	cfg := testutil.WriteConfig(t, fmt.Sprintf("prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]\nstore: {path: %s}\n", path))
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := bindings.NewPrefix(netip.MustParsePrefix("198.51.100.0/24"), bindings.CDN, bindings.FromAPI)
	b := bindings.NewBinding(netip.MustParsePrefix("192.0.2.0/25"), 0, 0, bindings.CDN, bindings.FromAPI)
	b.PrefixID = bindings.PrefixID(netip.MustParsePrefix("192.0.2.0/24"))
	if err := s.Commit(1, bindings.Mutation{Create: []bindings.Record{bindings.EncodePrefix(p), bindings.EncodeBinding(b)}}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	out, errOut, code := runBinary(t, "check", "--config", cfg)
	want := fmt.Sprintf("store %s is in use by pid %d: its items were not checked", path, os.Getpid())
	if code != 0 || !strings.Contains(out, want) {
		t.Errorf("a held store: exit %d, %q %q; want %q", code, out, errOut, want)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("check waited %v for a held store", d)
	}

	s.Close()
	out, errOut, code = runBinary(t, "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "store "+path+": ok (1 prefixes, 1 bindings made through the API, at revision 1)") {
		t.Errorf("a free store: exit %d, %q %q", code, out, errOut)
	}

	// The store's items break the file's rules together with it.
	bad := testutil.WriteConfig(t, fmt.Sprintf("prefixes: [{cidr: 192.0.2.0/24, service: spectrum}, {cidr: 198.51.100.0/23, service: cdn}]\nstore: {path: %s}\n", path))
	_, errOut, code = runBinary(t, "check", "--config", bad)
	if code != 1 || !strings.Contains(errOut, path) || !strings.Contains(errOut, "198.51.100.0/24") {
		t.Errorf("items that break the rules: exit %d, %q", code, errOut)
	}
}

// TestCheckLoadsWhatRunLoads: every file run reads before it serves, check
// reads too: a file that stops run fails check, naming the same key, and
// run fails on it the same way.
func TestCheckLoadsWhatRunLoads(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, err := selfsigned.Write(dir, "site", "a.example")
	if err != nil {
		t.Fatal(err)
	}
	notPEM := write("not.pem", "not a certificate\n", 0o644)
	empty := write("empty", "", 0o600)
	openKey := write("reset-key", strings.Repeat("k", 32), 0o644)
	// file is a configuration: admin and dispatch with more keys, then the
	// rest of the file.
	file := func(adminKeys, dispatchKeys, rest string) string {
		return "admin: {listen: 127.0.0.1:9180" + adminKeys + "}\ndispatch: {pin_dir: \"\"" + dispatchKeys + "}\n" +
			"prefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n" + rest
	}
	site := func(cdnKeys, siteKeys string) string {
		return "cdn: {" + cdnKeys + "sites: [{hosts: [a.example], origins: [\"https://127.0.0.1:8443\"]" + siteKeys + "}]}\n"
	}
	certs := func(c, k string) string {
		return site(fmt.Sprintf("certificates: [{cert_file: %s, key_file: %s}], ", c, k), "")
	}
	etcd := func(keys string) string {
		return "node: n\nstore: {path: " + filepath.Join(dir, "b.db") + ", etcd: {" + keys + "}}\n"
	}
	missing := filepath.Join(dir, "missing")
	for _, c := range []struct{ name, file, want string }{
		{"a missing certificate", file("", "", certs(missing, key)), "cdn.certificates[0]: open " + missing},
		{"a key that is not one", file("", "", certs(cert, notPEM)), "cdn.certificates[0]: tls: "},
		{"an origin CA file without a certificate", file("", "", site("", ", origin_tls: {ca_file: "+notPEM+"}")), "origin_tls.ca_file: " + notPEM + ": no PEM certificate in it"},
		{"an empty token file", file(", token_file: "+empty, "", ""), "admin.token_file: " + empty + " is empty"},
		{"a reset key others may read", file("", "", site("quic_reset_key_file: "+openKey+", ", "")), "cdn.quic_reset_key_file " + openKey + ": mode -rw-r--r--: others may read it"},
		{"an access log in no directory", file("", "", site("access_log: "+filepath.Join(missing, "access.log")+", ", "")), "cdn.access_log: open " + filepath.Join(missing, "access.log")},
		{"a missing etcd CA file", file("", "", etcd(`endpoints: ["https://127.0.0.1:2379"], ca_file: `+missing)), "store.etcd.ca_file: open " + missing},
		{"an empty etcd password file", file("", "", etcd(`endpoints: ["http://127.0.0.1:2379"], username: u, password_file: `+empty)), "store.etcd.password_file: " + empty + " is empty"},
		{"a namespace that does not exist", file("", ", netns: "+missing, ""), "dispatch.netns: " + missing + ": no such file or directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testutil.WriteConfig(t, c.file)
			_, errOut, code := runBinary(t, "check", "--config", cfg)
			if code != 1 || !strings.Contains(errOut, c.want) {
				t.Errorf("check: exit %d, %q; want 1 and %q", code, errOut, c.want)
			}
			netns.New(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stderr testutil.Buffer
			cmd := exec.CommandContext(ctx, binary, "run", "--config", cfg)
			cmd.Stderr = &stderr
			if err := cmd.Run(); err == nil || ctx.Err() != nil || !strings.Contains(stderr.String(), c.want) {
				t.Errorf("run: %v, %q; want a failure and %q", err, stderr.String(), c.want)
			}
		})
	}
}

// TestCheckWarnsAsRunLogs: check prints, on stderr, exactly the warnings
// run logs at start, and exits 0 with them; --strict makes them fail.
func TestCheckWarnsAsRunLogs(t *testing.T) {
	cfg := testutil.WriteConfig(t, `admin: {listen: 127.0.0.1:9180}
dispatch: {pin_dir: ""}
prefixes: [{cidr: 192.0.2.0/24, service: cdn}, {cidr: 198.51.100.0/24, service: spectrum}]
cdn:
  https_ports: [443]
  sites: [{hosts: [a.example], origins: ["http://127.0.0.1:8080"], edge_ips: [198.51.100.7]}]
spectrum:
  apps: [{name: lost, protocol: tcp, edge: 203.0.113.0/24, ports: "22", origins: ["127.0.0.1:2222"]}]
`)
	want := []string{
		"cdn.certificates: none, and https_ports [443] serve TLS: every handshake fails",
		"cdn.sites[0].edge_ips[0]: no address of 198.51.100.7/32 is bound to the cdn: the site is not served there, and its hosts answer 421 on the cdn's addresses",
		"spectrum.apps[0].edge: 203.0.113.0/24 is inside no prefix: the app never receives traffic",
	}
	out, errOut, code := runBinary(t, "check", "--config", cfg)
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if w, ok := strings.CutPrefix(l, "warning: "); ok {
			got = append(got, w)
		}
	}
	if code != 0 || !strings.Contains(out, ": ok (") || !slices.Equal(got, want) {
		t.Errorf("check: exit %d, %q %q; want 0 and the warnings %q", code, out, errOut, want)
	}
	_, errOut, code = runBinary(t, "check", "--strict", "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "3 warning(s), and --strict") {
		t.Errorf("check --strict: exit %d, %q", code, errOut)
	}

	ns := netns.New(t)
	in := startRun(t, ns, cfg, "127.0.0.1:9180")
	var logged []string
	for _, l := range strings.Split(in.stderr.String(), "\n") {
		var rec struct{ Level, Msg string }
		if json.Unmarshal([]byte(l), &rec) == nil && rec.Level == "WARN" {
			logged = append(logged, rec.Msg)
		}
	}
	if !slices.Equal(logged, want) {
		t.Errorf("run logged the warnings %q, want %q", logged, want)
	}
}
