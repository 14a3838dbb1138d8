package e2e

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCIStopsNothingByName: CI shares its machine, so .ci/run may stop only
// what it started itself, never a process by name (pkill, killall, pidof,
// pgrep), and keeps the packages it installs from starting their services
// at all (a policy-rc.d that refuses, removed again afterwards).
func TestCIStopsNothingByName(t *testing.T) {
	b, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	byName := regexp.MustCompile(`(^|[^a-z_-])(pkill|killall|pidof|pgrep)([^a-z_-]|$)`)
	for i, line := range strings.Split(string(b), "\n") {
		code, _, _ := strings.Cut(line, "#")
		if byName.MatchString(code) {
			t.Errorf(".ci/run:%d stops processes by name: %s", i+1, strings.TrimSpace(line))
		}
	}
	s := string(b)
	install := -1
	if loc := regexp.MustCompile(`(?m)^\s*apt-get install`).FindStringIndex(s); loc != nil { // the command, not a message naming it
		install = loc[0]
	}
	guard := strings.Index(s, "policy-rc.d")
	if install < 0 || guard < 0 || guard > install {
		t.Errorf(".ci/run installs packages without a policy-rc.d in place first: their services would start")
	}
	if !strings.Contains(s, "exit 101") {
		t.Errorf(".ci/run's policy-rc.d does not refuse (exit 101)")
	}
}

// TestCIChecksWhatItCannotInstall: .ci/run stops before it changes
// anything when Go is older than 1.26 or make or git is missing, and says
// what to install. A fake apt-get, first on the PATH, tells if it went on.
func TestCIChecksWhatItCannotInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip(".ci/run checks for root first")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, goVersion string
		system          bool // the system's PATH after the fake tools
		want            []string
	}{
		{"an old Go", "go1.25.7", true, []string{".ci/run: go1.25.7 is too old: Go 1.26 or later"}},
		{"no make, no git", "go1.26.0", false, []string{".ci/run: make is not installed: apt-get install -y make", ".ci/run: git is not installed: apt-get install -y git"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ran := filepath.Join(dir, "apt-get-ran")
			fake := map[string]string{
				"go":      "#!/bin/sh\necho " + c.goVersion + "\n",
				"apt-get": "#!/bin/sh\ntouch " + ran + "\nexit 1\n",
			}
			for name, body := range fake {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			path := dir
			if c.system {
				path += ":" + os.Getenv("PATH")
			} else {
				for _, tool := range []string{"id", "dirname"} { // what the script runs before its checks
					p, err := exec.LookPath(tool)
					if err != nil {
						t.Fatal(err)
					}
					if err := os.Symlink(p, filepath.Join(dir, tool)); err != nil {
						t.Fatal(err)
					}
				}
			}
			cmd := exec.Command(bash, "../.ci/run")
			cmd.Env = append(os.Environ(), "PATH="+path)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf(".ci/run succeeded:\n%s", out)
			}
			for _, w := range c.want {
				if !strings.Contains(string(out), w) {
					t.Errorf(".ci/run said %q, want %q", out, w)
				}
			}
			if _, err := os.Stat(ran); err == nil {
				t.Errorf(".ci/run went on to apt-get:\n%s", out)
			}
		})
	}
}

// TestREADMEListsWhatCIInstalls: the README's Requirements name the
// packages .ci/run installs, no other, and every package a test's NeedTool
// names.
func TestREADMEListsWhatCIInstalls(t *testing.T) {
	readme := map[string]bool{}
	readmeText := ""
	for _, b := range docBlocks(t, "../README.md") {
		if b.info != "sh" || len(b.lines) == 0 || !strings.HasPrefix(b.lines[0], "apt-get install") {
			continue
		}
		readmeText = strings.Join(b.lines, "\n")
		for _, line := range b.lines {
			code, _, _ := strings.Cut(line, "#")
			if rest, ok := strings.CutPrefix(code, "apt-get install"); ok {
				for _, f := range strings.Fields(rest) {
					if !strings.HasPrefix(f, "-") {
						readme[f] = true
					}
				}
			}
		}
	}
	if len(readme) == 0 {
		t.Fatal("the README lists no packages in an apt-get install block")
	}
	b, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	ci := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?s)(bpf_toolchain|test_tools)=\((.*?)\)`).FindAllStringSubmatch(string(b), -1) {
		for _, f := range strings.Fields(m[2]) {
			name, _, _ := strings.Cut(strings.Trim(f, "'"), "=")
			ci[name] = true
			if m[1] == "test_tools" && !readme[name] {
				t.Errorf(".ci/run installs %s, which the README's Requirements do not list", name)
			}
		}
	}
	for p := range readme {
		if !ci[p] {
			t.Errorf("the README lists %s, which .ci/run does not install", p)
		}
	}
	h2spec := regexp.MustCompile(`go install (\S+)`).FindStringSubmatch(string(b))
	if h2spec == nil || !strings.Contains(readmeText, h2spec[0]) {
		t.Errorf("the README does not say %q as .ci/run does", h2spec)
	}
	needRE := regexp.MustCompile(`NeedTool\(\w+, [^,]+, "([^"]+)"\)`)
	filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range needRE.FindAllStringSubmatch(string(src), -1) {
			if pkg := m[1]; !readme[pkg] && !strings.Contains(readmeText, pkg) {
				t.Errorf("%s needs %q, which the README's Requirements do not list", path, pkg)
			}
		}
		return nil
	})
}
