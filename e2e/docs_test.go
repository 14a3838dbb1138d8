package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// A doc's example is a fenced block: every ```yaml block is a configuration
// that TestDocsConfigExamples checks, and every ```sh block (or a block of
// "$ " lines, a session) a command a test runs. An HTML comment on the
// line before a block says what happens to it, in clauses separated by
// "; ":
//
//	<!-- example: run by TestAPIExamples -->    the test that runs it
//	<!-- example: not run: needs etcd -->      why nothing can run it
//	<!-- example: warns: a fragment -->        why check warns of it
//
// TestDocsExamplesAccounted fails on a command block that says neither who
// runs it nor why nothing can.
type docBlock struct {
	file  string
	line  int    // of the opening fence
	info  string // what follows the fence: sh, yaml, ...
	lines []string
	mark  map[string]string // the example comment's clauses: "run by", "not run", "warns"
}

func (b docBlock) String() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

// session reports whether the block is commands: ```sh, or lines that
// start with "$ ".
func (b docBlock) session() bool {
	if b.info == "sh" {
		return true
	}
	return b.info == "" && slices.ContainsFunc(b.lines, func(l string) bool { return strings.HasPrefix(l, "$ ") })
}

var exampleMark = regexp.MustCompile(`^<!-- example: (.*) -->$`)

// docFiles are the README and every doc.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"../README.md"}, files...)
}

// docBlocks returns the fenced blocks of a markdown file.
func docBlocks(t *testing.T, file string) []docBlock {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []docBlock
	var cur *docBlock
	prev := ""
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &docBlock{file: strings.TrimPrefix(file, "../"), line: i + 1, info: strings.TrimPrefix(line, "```"), mark: map[string]string{}}
			if m := exampleMark.FindStringSubmatch(prev); m != nil {
				cur.mark = parseMark(m[1])
			}
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, line)
		}
		if strings.TrimSpace(line) != "" {
			prev = line
		}
	}
	return blocks
}

// parseMark splits an example comment into its clauses: "run by TestX",
// "not run: REASON", "warns: REASON". A reason may hold "; " itself: a
// clause starts only with one of these words.
func parseMark(s string) map[string]string {
	mark := map[string]string{}
	key := ""
	for _, piece := range strings.Split(s, "; ") {
		switch {
		case strings.HasPrefix(piece, "run by "):
			key = "run by"
			mark[key] = strings.TrimPrefix(piece, "run by ")
		case strings.HasPrefix(piece, "not run: "), strings.HasPrefix(piece, "warns: "):
			k, v, _ := strings.Cut(piece, ": ")
			key = k
			mark[key] = v
		case key != "":
			mark[key] += "; " + piece
		default:
			mark[piece] = "" // not a clause: TestDocsExamplesAccounted says so
		}
	}
	return mark
}

// examplesOf returns the blocks of file that test runs.
func examplesOf(t *testing.T, file, test string) []docBlock {
	t.Helper()
	var out []docBlock
	for _, b := range docBlocks(t, file) {
		if b.mark["run by"] == test {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s marks no example as run by %s", file, test)
	}
	return out
}

// TestDocsExamplesAccounted: every command block of the README and the
// docs is run by a test that exists, or says why nothing can run it;
// every block's kind is one the tests know; a mark names a known clause.
func TestDocsExamplesAccounted(t *testing.T) {
	tests := map[string]bool{}
	sources, _ := filepath.Glob("*_test.go")
	funcRE := regexp.MustCompile(`(?m)^func (Test\w+)\(t \*testing\.T\)`)
	for _, f := range sources {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range funcRE.FindAllStringSubmatch(string(b), -1) {
			tests[m[1]] = true
		}
	}
	n := 0
	for _, file := range docFiles(t) {
		for _, b := range docBlocks(t, file) {
			for k := range b.mark {
				if k != "run by" && k != "not run" && k != "warns" {
					t.Errorf("%s: the example comment's clause %q is not run by, not run: or warns:", b, k)
				}
			}
			switch b.info {
			case "", "sh", "yaml", "json", "text":
			default:
				t.Errorf("%s: a ```%s block: commands are ```sh, configurations ```yaml, output ```text", b, b.info)
			}
			if !b.session() {
				continue
			}
			n++
			run, notRun := b.mark["run by"], b.mark["not run"]
			switch {
			case run != "" && !tests[run]:
				t.Errorf("%s: run by %s, which is not a test of e2e", b, run)
			case run == "" && notRun == "":
				t.Errorf("%s: an example no test runs: run it from a test and mark it <!-- example: run by TestX -->, or say why nothing can: <!-- example: not run: REASON -->", b)
			}
		}
	}
	if n == 0 {
		t.Fatal("no command block found in the docs")
	}
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

	var try, session []string
	for _, b := range examplesOf(t, "../README.md", "TestREADMEExamples") {
		if b.session() && b.info == "sh" && strings.HasPrefix(b.lines[0], "$ ") {
			session = b.lines
		} else {
			try = b.lines
		}
	}
	if try == nil || session == nil {
		t.Fatalf("the README's demo blocks are not marked as this test runs them")
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

// TestAPIExamples runs docs/api.md's examples in order against a node
// on the configuration the doc gives them (the cdn on tcp/443, a spectrum
// app there), each answering success, $PREFIX and $BINDING taken from the
// results before them.
func TestAPIExamples(t *testing.T) {
	testutil.NeedTool(t, "curl", "curl")
	var config, examples []string
	var configBlock docBlock
	for _, b := range examplesOf(t, "../docs/api.md", "TestAPIExamples") {
		switch b.info {
		case "yaml":
			config, configBlock = b.lines, b
		case "sh":
			examples = b.lines
		}
	}
	if config == nil || examples == nil {
		t.Fatal("docs/api.md marks no configuration and commands as run by TestAPIExamples")
	}
	ns := netns.New(t)
	startInstance(t, ns, configExample(t, t.TempDir(), configBlock))
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

// fileKey finds the keys whose values name files, in a doc's
// configuration; a store's path is one when it ends in .db.
var fileKey = regexp.MustCompile(`\b(cert_file|key_file|ca_file|token_file|password_file|path)(\s*:\s*)"?([^"\s,}\]#]+)"?`)

// configExample returns a doc's configuration with every file it names
// made under dir, and its paths moved there: certificates and keys (one
// self-signed pair), CA files (that certificate), tokens and passwords; a
// store's directory, not its file.
func configExample(t *testing.T, dir string, b docBlock) string {
	t.Helper()
	cert, key, err := selfsigned.Write(t.TempDir(), "example", "example.com", "*.example.com")
	if err != nil {
		t.Fatal(err)
	}
	content := map[string]string{"cert_file": cert, "ca_file": cert, "key_file": key}
	body := fileKey.ReplaceAllStringFunc(strings.Join(b.lines, "\n")+"\n", func(m string) string {
		sub := fileKey.FindStringSubmatch(m)
		k, sep, v := sub[1], sub[2], sub[3]
		if k == "path" && !strings.HasSuffix(v, ".db") {
			return m // a route's or a health check's
		}
		target := filepath.Join(dir, v)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			t.Fatal(err)
		}
		var data []byte
		switch from := content[k]; {
		case k == "path":
		case from != "":
			if data, err = os.ReadFile(from); err != nil {
				t.Fatal(err)
			}
			fallthrough
		default:
			if data == nil {
				data = []byte("example-secret\n")
			}
			if err := os.WriteFile(target, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return k + sep + strconv.Quote(target)
	})
	return body
}

// TestDocsConfigExamples: every configuration of the README and the docs
// passes edgeproxy check, with the files it names made; with no warning,
// unless the example says why it warns.
func TestDocsConfigExamples(t *testing.T) {
	n := 0
	for _, file := range docFiles(t) {
		for _, b := range docBlocks(t, file) {
			if b.info != "yaml" {
				continue
			}
			n++
			t.Run(b.String(), func(t *testing.T) {
				dir := t.TempDir()
				cfg := filepath.Join(dir, "edgeproxy.yaml")
				if err := os.WriteFile(cfg, []byte(configExample(t, dir, b)), 0o600); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(binary, "check", "--config", cfg)
				cmd.Dir = dir
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				warns := strings.Count(stderr.String(), "warning: ")
				switch why := b.mark["warns"]; {
				case err != nil:
					t.Errorf("%s: check: %v\n%s%s", b, err, stdout.String(), stderr.String())
				case why == "" && warns > 0:
					t.Errorf("%s: check warns, and the doc does not say why (<!-- example: warns: REASON -->):\n%s", b, stderr.String())
				case why != "" && warns == 0:
					t.Errorf("%s: says it warns (%s), and check does not", b, why)
				}
			})
		}
	}
	if n == 0 {
		t.Fatal("no configuration found in the docs")
	}
}
