package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestReload: SIGHUP applies a changed file (a site's origin, a new
// spectrum app, a new prefix) while an established spectrum connection
// keeps working; a file that does not validate, or that changes a key only
// a restart can, changes nothing and is counted as an error.
func TestReload(t *testing.T) {
	ns := netns.New(t)
	testOrigin(t, "origin-1", "127.0.0.1:18301")
	testOrigin(t, "origin-2", "127.0.0.1:18302")
	echo.Start(t, "echo-a", "127.0.0.1:18307")
	echo.Start(t, "echo-b", "127.0.0.1:18308")
	const head = `store: {path: ""}
cdn:
  http_ports: [80]
  https_ports: []
  http3: false
  access_log: "off"
  sites: [{hosts: [a.example], origins: ["%s"]}]
spectrum:
  apps:
    - {name: a, protocol: tcp, edge: 198.51.100.0/24, ports: "7", origins: ["127.0.0.1:18307"]}
`
	body := func(origin, more string) string {
		return strings.Replace(head, "%s", origin, 1) + more + `prefixes:
  - {cidr: 192.0.2.0/24, service: cdn}
  - {cidr: 198.51.100.0/24, service: spectrum}
`
	}
	in := startInstance(t, ns, body("http://127.0.0.1:18301", ""))
	rewrite := func(b string) {
		t.Helper()
		if err := os.WriteFile(in.config, []byte("dispatch: {pin_dir: \"\"}\nadmin: {listen: 127.0.0.1:9180}\n"+b), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := in.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	site := func() string {
		req, _ := http.NewRequest("GET", "http://192.0.2.1/", nil)
		req.Host = "a.example"
		resp, err := ns.HTTPClient().Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "{") {
			return string(b)
		}
		return decodeSeen(t, string(b)).Origin
	}
	reloads := func(result string) string {
		resp, err := ns.HTTPClient().Get(in.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, `edgeproxy_config_reloads_total{result="`+result+`"}`) {
				return strings.Fields(l)[1]
			}
		}
		return "0"
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s, never\n%s", what, in.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	if got := site(); got != "origin-1" {
		t.Fatalf("before: a.example answered by %q", got)
	}
	// An established spectrum connection, to keep across the reloads.
	conn, err := net.Dial("tcp", "198.51.100.1:7")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "echo-a") {
		t.Fatalf("spectrum app a: %q %v", l, err)
	}
	echoes := func() bool {
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(conn, "still here\n")
		l, err := br.ReadString('\n')
		return err == nil && l == "still here\n"
	}
	if askName(t, "tcp", "198.51.100.1:8") != echo.Refused || askName(t, "tcp", "203.0.113.1:8") == "echo-b" {
		t.Fatal("before: port 8 is served")
	}

	rewrite(body("http://127.0.0.1:18302", `    - {name: b, protocol: tcp, edge: 198.51.100.0/24, ports: "8", origins: ["127.0.0.1:18308"]}
    - {name: c, protocol: tcp, edge: 203.0.113.0/24, ports: "8", origins: ["127.0.0.1:18308"]}
`) + "  - {cidr: 203.0.113.0/24, service: spectrum}\n")
	waitFor("reloaded", func() bool { return reloads("ok") == "1" })
	if got := site(); got != "origin-2" {
		t.Errorf("after the reload: a.example answered by %q, want origin-2", got)
	}
	for _, dst := range []string{"198.51.100.1:8", "203.0.113.1:8"} {
		if got := askName(t, "tcp", dst); got != "echo-b" {
			t.Errorf("after the reload: %s answered by %q, want the new app's echo-b", dst, got)
		}
	}
	if !echoes() {
		t.Error("the established spectrum connection broke across the reload")
	}

	// Refused reloads: nothing changes.
	for _, bad := range []struct{ name, file, log string }{
		{"invalid", body("http://127.0.0.1:18301", "") + "  - {cidr: 203.0.113.0/33, service: spectrum}\n", "prefixes[2].cidr"},
		{"restart-only", "shutdown_grace: 7s\n" + body("http://127.0.0.1:18301", ""), "shutdown_grace: changing it needs a restart"},
	} {
		before := reloads("error")
		rewrite(bad.file)
		waitFor(bad.name+" reload counted as an error", func() bool { return reloads("error") != before })
		if !strings.Contains(in.stderr.String(), bad.log) {
			t.Errorf("%s: the log does not name %q:\n%s", bad.name, bad.log, in.stderr.String())
		}
		if got := site(); got != "origin-2" {
			t.Errorf("%s: a.example answered by %q after a refused reload", bad.name, got)
		}
		if got := askName(t, "tcp", "203.0.113.1:8"); got != "echo-b" {
			t.Errorf("%s: the new prefix answers %q after a refused reload", bad.name, got)
		}
	}
	if !echoes() {
		t.Error("the established spectrum connection broke")
	}
}
