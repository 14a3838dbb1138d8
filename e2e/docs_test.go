package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// shBlocks returns the ```sh blocks of a markdown file, line by line.
func shBlocks(t *testing.T, file string) [][]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks [][]string
	var cur []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && line == "```sh":
			in, cur = true, nil
		case in && line == "```":
			in = false
			blocks = append(blocks, cur)
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}

// shell runs a documented command line in the test's namespace, with
// bin/edgeproxy the binary under test; it returns the output and whether
// it succeeded.
func shell(t *testing.T, line string) (string, bool) {
	t.Helper()
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = t.TempDir()
	os.MkdirAll(filepath.Join(cmd.Dir, "bin"), 0o755)
	if err := os.Symlink(binary, filepath.Join(cmd.Dir, "bin", "edgeproxy")); err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(cmd.Dir, "bin")+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return string(out), err == nil
}

// TestREADMEExamples runs the README's examples against the embedded demo
// as it documents them: every command of the "what to try" block succeeds
// but the one it says is refused, and the session of binding commands
// prints what the README shows (ids and elided text aside).
func TestREADMEExamples(t *testing.T) {
	testutil.NeedTool(t, "curl", "curl")
	ns := netns.New(t)
	startRun(t, ns, "", "127.0.0.1:9180") // the embedded demo

	blocks := shBlocks(t, "../README.md")
	var try, session []string
	for _, b := range blocks {
		switch {
		case len(b) > 0 && strings.HasPrefix(b[0], "curl http://127.1.1.7:8080/"):
			try = b
		case len(b) > 0 && strings.HasPrefix(b[0], "$ bin/edgeproxy bindings add"):
			session = b
		}
	}
	if try == nil || session == nil {
		t.Fatalf("the README's demo blocks are not where this test looks: %d sh blocks", len(blocks))
	}
	comment := regexp.MustCompile(`\s+#.*$`)
	for _, line := range try {
		cmdLine := comment.ReplaceAllString(line, "")
		if strings.HasPrefix(cmdLine, "curl ") {
			cmdLine = "curl -sS --max-time 5 " + strings.TrimPrefix(cmdLine, "curl ")
		}
		out, ok := shell(t, cmdLine)
		if want := !strings.Contains(line, "refused"); ok != want {
			t.Errorf("README: %q: succeeded %v, want %v\n%s", line, ok, want, out)
		}
	}

	// The session: "$ " lines are commands, the lines after one its output.
	id := ""
	idRE := regexp.MustCompile(`\(id ([0-9a-f]{32})`)
	for i := 0; i < len(session); i++ {
		line, ok := strings.CutPrefix(session[i], "$ ")
		if !ok {
			continue
		}
		cmdLine := comment.ReplaceAllString(line, "")
		cmdLine = strings.ReplaceAll(cmdLine, "5e7c…", id)
		if strings.HasPrefix(cmdLine, "curl ") {
			cmdLine = "curl -sS --max-time 5 " + strings.TrimPrefix(cmdLine, "curl ")
		}
		out, succeeded := shell(t, cmdLine)
		if want := !strings.Contains(line, "refused"); succeeded != want {
			t.Errorf("README: %q: succeeded %v, want %v\n%s", line, succeeded, want, out)
		}
		if m := idRE.FindStringSubmatch(out); m != nil && id == "" {
			id = m[1]
		}
		got := strings.Split(strings.TrimRight(out, "\n"), "\n")
		for j := 0; i+1 < len(session) && !strings.HasPrefix(session[i+1], "$ "); j++ {
			i++
			// 5e7c… stands for the id; another elision (…) for what varies.
			want := strings.ReplaceAll(session[i], "5e7c…", id)
			prefix, _, elided := strings.Cut(want, "…")
			if j >= len(got) || elided && !strings.HasPrefix(got[j], prefix) || !elided && got[j] != want {
				t.Errorf("README: %q printed %q, line %d want %q", line, out, j+1, want)
				break
			}
		}
	}
	if id == "" {
		t.Errorf("the session's add printed no id")
	}
}

// TestAPIExamples runs docs/api.md's examples in order against a node as
// they describe it (the cdn on tcp/443, a spectrum app there), each
// answering success, $PREFIX and $BINDING taken from the
// results before them.
func TestAPIExamples(t *testing.T) {
	testutil.NeedTool(t, "curl", "curl")
	ns := netns.New(t)
	startInstance(t, ns, `store: {path: ""}
cdn:
  http_ports: [80]
  https_ports: [443]
  sites: [{hosts: ["*"], origins: ["http://127.0.0.1:18080"]}]
spectrum:
  apps: [{name: web, protocol: tcp, edge: 192.0.2.0/24, ports: "443", origins: ["127.0.0.1:18443"]}]
`)
	var examples []string
	for _, b := range shBlocks(t, "../docs/api.md") {
		if len(b) > 0 && strings.HasPrefix(b[0], "curl -s 127.0.0.1:9180/v1/prefixes -d") {
			examples = b
		}
	}
	if len(examples) == 0 {
		t.Fatal("docs/api.md's examples are not where this test looks")
	}
	env := map[string]string{}
	for _, line := range examples {
		cmdLine := os.Expand(line, func(k string) string { return env[k] })
		out, ok := shell(t, cmdLine)
		var resp admin.Envelope
		var item struct {
			ID string `json:"id"`
		}
		if !ok || json.Unmarshal([]byte(out), &resp) != nil || !resp.Success || json.Unmarshal(resp.Result, &item) != nil {
			t.Fatalf("docs/api.md: %q: %s", line, out)
		}
		switch {
		case env["PREFIX"] == "":
			env["PREFIX"] = item.ID
		case env["BINDING"] == "":
			env["BINDING"] = item.ID
		}
	}
}
