package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// TestReloadAccessLog: SIGHUP applies cdn.access_log: to a new file, off,
// and back; and with the path unchanged, it opens the file again, so a
// rotated log (renamed away) is followed. A path that does not open
// refuses the reload, and the running log stays.
func TestReloadAccessLog(t *testing.T) {
	ns := netns.New(t)
	testOrigin(t, "origin-1", "127.0.0.1:18301")
	dir := t.TempDir()
	logA, logB := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	conf := func(where string) string {
		return fmt.Sprintf(`store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: cdn}]
cdn:
  http_ports: [80]
  access_log: %q
  sites: [{hosts: [a.example], origins: ["http://127.0.0.1:18301"]}]
`, where)
	}
	in := startInstance(t, ns, conf(logA))
	reloads := 0
	reload := func(where, want string) {
		t.Helper()
		if err := os.WriteFile(in.config, []byte("dispatch: {pin_dir: \"\"}\nadmin: {listen: 127.0.0.1:9180}\n"+conf(where)), 0o600); err != nil {
			t.Fatal(err)
		}
		in.cmd.Process.Signal(syscall.SIGHUP)
		reloads++
		if err := testutil.WaitFor(5*time.Second, func() error {
			if strings.Count(in.stderr.String(), `"msg":"reload`) < reloads {
				return errors.New("no reload line yet")
			}
			return nil
		}); err != nil {
			t.Fatalf("no reload line after SIGHUP %d:\n%s", reloads, in.stderr)
		}
		if !strings.Contains(in.stderr.String(), want) {
			t.Fatalf("reload %d: want %q in\n%s", reloads, want, in.stderr)
		}
	}
	n := 0
	request := func() string {
		t.Helper()
		n++
		path := fmt.Sprintf("/req-%d", n)
		req, _ := http.NewRequest("GET", "http://192.0.2.1"+path, nil)
		req.Host = "a.example"
		hc := ns.HTTPClient()
		defer hc.CloseIdleConnections()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return path
	}
	// logged reports whether the line of path reached file (the log is
	// batched: within a second).
	logged := func(file, path string) bool {
		deadline := time.Now().Add(time.Second)
		for {
			if b, _ := os.ReadFile(file); strings.Contains(string(b), `"path":"`+path+`"`) {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	if p := request(); !logged(logA, p) {
		t.Fatalf("%s not in %s before any reload", p, logA)
	}
	reload(logB, `"msg":"reloaded"`)
	if p := request(); !logged(logB, p) || logged(logA, p) {
		t.Errorf("after the reload to %s: %s not there alone", logB, p)
	}
	// Rotation: the file renamed away, the same path reloaded.
	if err := os.Rename(logB, logB+".1"); err != nil {
		t.Fatal(err)
	}
	reload(logB, `"msg":"reloaded"`)
	if p := request(); !logged(logB, p) || logged(logB+".1", p) {
		t.Errorf("after a rotation and a reload: %s not in the new %s alone", p, logB)
	}
	reload("off", `"msg":"reloaded"`)
	p := request()
	for _, f := range []string{logA, logB} {
		if logged(f, p) {
			t.Errorf("with the access log off, %s reached %s", p, f)
		}
	}
	reload(filepath.Join(dir, "no-such-dir", "c.log"), "cdn.access_log")
	reload(logA, `"msg":"reloaded"`)
	if p := request(); !logged(logA, p) {
		t.Errorf("after a refused reload and a good one: %s not in %s", p, logA)
	}
}
