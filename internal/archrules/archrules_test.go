package archrules

import (
	"bufio"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/edgeproxy/edgeproxy"

// root is the repository's top directory, seen from this package's.
const root = "../.."

// importRule is one rule of the house about imports: no package named in
// importers (nor any package below one) imports a package of forbidden
// (nor one below it).
type importRule struct {
	text      string
	importers []string
	forbidden []string
}

var backticked = regexp.MustCompile("`([^`]+)`")

// importWord is where a rule's importers end and its forbidden imports
// begin: "never import", "import no", "imports no".
var importWord = regexp.MustCompile(`\bimports?\b`)

// readRules returns the import rules of docs/ARCHITECTURE.md's "Rules of
// the house": every bullet that says "import". The backticked names before
// the word are the importers, those after it (up to a ';' or the sentence's
// end) the packages they must not import.
func readRules(t *testing.T) []importRule {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "docs", "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var bullets []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Rules of the house"
		case !in:
		case strings.HasPrefix(line, "- "):
			bullets = append(bullets, strings.TrimPrefix(line, "- "))
		case strings.HasPrefix(line, "  ") && len(bullets) > 0:
			bullets[len(bullets)-1] += " " + strings.TrimSpace(line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var rules []importRule
	for _, b := range bullets {
		loc := importWord.FindStringIndex(b)
		if loc == nil {
			continue
		}
		before, after := b[:loc[0]], b[loc[1]:]
		after = cutSentence(after)
		r := importRule{text: b, importers: names(before), forbidden: names(after)}
		if len(r.importers) == 0 || len(r.forbidden) == 0 {
			t.Fatalf("ARCHITECTURE.md: rule %q says import but names no importer or no forbidden package in backticks", b)
		}
		rules = append(rules, r)
	}
	return rules
}

// cutSentence cuts s at its first ';' or ". " outside backticks.
func cutSentence(s string) string {
	quoted := false
	for i, c := range s {
		switch {
		case c == '`':
			quoted = !quoted
		case quoted:
		case c == ';', c == '.' && (i+1 == len(s) || s[i+1] == ' '):
			return s[:i]
		}
	}
	return s
}

func names(s string) []string {
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// importPath turns a name from the document into an import path: a
// directory of the repository is a package of the module; anything else
// (log/slog, github.com/cilium/ebpf) is an import path as written.
func importPath(t *testing.T, name string) string {
	t.Helper()
	if st, err := os.Stat(filepath.Join(root, filepath.FromSlash(name))); err == nil && st.IsDir() {
		return module + "/" + name
	}
	if strings.Contains(strings.SplitN(name, "/", 2)[0], ".") {
		return name
	}
	if _, err := os.Stat(filepath.Join(build(t), filepath.FromSlash(name))); err != nil {
		t.Fatalf("ARCHITECTURE.md names %q, which is neither a directory of the repository nor a standard package", name)
	}
	return name
}

// build returns GOROOT's src directory, where standard packages live.
func build(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "src")
}

func within(path, pkg string) bool {
	return path == pkg || strings.HasPrefix(path, pkg+"/")
}

// packageImports returns every package of the repository by import path,
// with the imports of its non-test files.
func packageImports(t *testing.T) map[string][]string {
	t.Helper()
	pkgs := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "results") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := module
		if rel != "." {
			pkg += "/" + filepath.ToSlash(rel)
		}
		for _, im := range f.Imports {
			p, err := strconv.Unquote(im.Path.Value)
			if err != nil {
				return err
			}
			if !slices.Contains(pkgs[pkg], p) {
				pkgs[pkg] = append(pkgs[pkg], p)
			}
		}
		if _, ok := pkgs[pkg]; !ok {
			pkgs[pkg] = nil
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// TestRulesOfTheHouse checks every import rule of docs/ARCHITECTURE.md
// against the repository's packages.
func TestRulesOfTheHouse(t *testing.T) {
	rules := readRules(t)
	// The rules the document states today; a rewording that stops them
	// parsing as rules must not stop them being checked.
	if len(rules) < 3 {
		t.Fatalf("ARCHITECTURE.md's Rules of the house hold %d import rules, want at least 3: %q", len(rules), rules)
	}
	pkgs := packageImports(t)
	for _, r := range rules {
		for _, name := range r.importers {
			importer := importPath(t, name)
			found := false
			for pkg, imports := range pkgs {
				if !within(pkg, importer) {
					continue
				}
				found = true
				for _, f := range r.forbidden {
					forbidden := importPath(t, f)
					for _, im := range imports {
						if within(im, forbidden) {
							t.Errorf("%s imports %s, against the rule %q", pkg, im, r.text)
						}
					}
				}
			}
			if !found {
				t.Errorf("rule %q names %q, which holds no Go package", r.text, name)
			}
		}
	}
}
