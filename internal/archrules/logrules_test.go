package archrules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// listedPackage is what go list says of a package.
type listedPackage struct {
	ImportPath string
	Dir        string
	Export     string
	GoFiles    []string
	CgoFiles   []string
	Module     *struct{ Path string }
}

// ourPackages type-checks every package of the module from its non-test
// files, the packages they import from their export data, and calls fn
// with each file and what the checker knows of it.
func ourPackages(t *testing.T, fn func(fset *token.FileSet, f *ast.File, info *types.Info)) {
	t.Helper()
	cmd := exec.Command("go", "list", "-export", "-deps", "-json=ImportPath,Dir,Export,GoFiles,CgoFiles,Module", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	exports := map[string]string{}
	var ours []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
		if p.Module != nil && p.Module.Path == module {
			ours = append(ours, p)
		}
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		if exports[path] == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(exports[path])
	})
	for _, p := range ours {
		if len(p.CgoFiles) > 0 {
			t.Fatalf("%s has cgo files, which this check cannot read", p.ImportPath)
		}
		var files []*ast.File
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}, Uses: map[*ast.Ident]types.Object{}, Selections: map[*ast.SelectorExpr]*types.Selection{}}
		conf := types.Config{Importer: imp}
		if _, err := conf.Check(p.ImportPath, fset, files, info); err != nil {
			t.Fatalf("type-checking %s: %v", p.ImportPath, err)
		}
		for _, f := range files {
			fn(fset, f, info)
		}
	}
}

// slogCallee returns the name of the log/slog function or method a call
// calls (Info, LogAttrs, Any, ...), or "".
func slogCallee(info *types.Info, call *ast.CallExpr) string {
	if fn := callee(info, call); fn != nil && fn.Pkg() != nil && fn.Pkg().Path() == "log/slog" {
		return fn.Name()
	}
	return ""
}

// calleePackage returns the import path of the package whose function or
// method a call calls, or "".
func calleePackage(info *types.Info, call *ast.CallExpr) string {
	if fn := callee(info, call); fn != nil && fn.Pkg() != nil {
		return fn.Pkg().Path()
	}
	return ""
}

// callee returns the function or method a call calls, or nil.
func callee(info *types.Info, call *ast.CallExpr) *types.Func {
	var obj types.Object
	switch fun := ast.Unparen(call.Fun).(type) {
	case *ast.SelectorExpr:
		if sel := info.Selections[fun]; sel != nil {
			obj = sel.Obj()
		} else {
			obj = info.Uses[fun.Sel]
		}
	case *ast.Ident:
		obj = info.Uses[fun]
	}
	fn, _ := obj.(*types.Func)
	return fn
}

// isAnySlice reports whether t is []any, the arguments a log call takes.
func isAnySlice(t types.Type) bool {
	s, ok := t.(*types.Slice)
	if !ok {
		return false
	}
	i, ok := s.Elem().Underlying().(*types.Interface)
	return ok && i.Empty()
}

func isDuration(t types.Type) bool {
	n, ok := t.(*types.Named)
	return ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == "time" && n.Obj().Name() == "Duration"
}

// isDurationString reports whether call is d.String() on a time.Duration.
func isDurationString(info *types.Info, call *ast.CallExpr) bool {
	sel, ok := ast.Unparen(call.Fun).(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "String" {
		return false
	}
	return isDuration(info.TypeOf(sel.X))
}

// TestLogDurations: every log line gives a duration in one form, seconds
// as a float under a key that ends in _s (docs/ARCHITECTURE.md, "Rules of
// the house"). Every call of log/slog in the module's own files is
// checked: no time.Duration value (JSON would print nanoseconds, text a
// Go duration), no Duration's String, not even in a message, no
// slog.Duration, no key in _ms, _us or _ns, and a _s key's value a float.
func TestLogDurations(t *testing.T) {
	var bad []string
	seen := map[token.Pos]bool{}
	ourPackages(t, func(fset *token.FileSet, f *ast.File, info *types.Info) {
		report := func(n ast.Node, format string, args ...any) {
			if seen[n.Pos()] {
				return
			}
			seen[n.Pos()] = true
			pos := fset.Position(n.Pos())
			if abs, err := filepath.Abs(root); err != nil {
			} else if rel, err := filepath.Rel(abs, pos.Filename); err == nil {
				pos.Filename = rel
			}
			bad = append(bad, pos.String()+": "+fmt.Sprintf(format, args...))
		}
		// value checks one argument of a log call (the []any literals
		// and appends that gather arguments are checked as calls are).
		value := func(e ast.Expr) {
			if isDuration(info.TypeOf(e)) {
				report(e, "a time.Duration in a log line: give seconds, d.Seconds() under a key ending in _s")
			}
		}
		// args checks a log call's arguments, or those a []any gathers
		// for one.
		args := func(list []ast.Expr) {
			for i, a := range list {
				value(a)
				ast.Inspect(a, func(n ast.Node) bool {
					c, ok := n.(*ast.CallExpr)
					switch {
					case !ok:
					case isDurationString(info, c):
						report(c, "a duration as text in a log line: give seconds, d.Seconds() under a key ending in _s")
					case calleePackage(info, c) == "fmt":
						for _, fa := range c.Args {
							if isDuration(info.TypeOf(fa)) {
								report(fa, "a duration formatted into a log line: give seconds, d.Seconds() under a key ending in _s")
							}
						}
					}
					return true
				})
				lit, ok := ast.Unparen(a).(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING || i == len(list)-1 {
					continue
				}
				key := strings.Trim(lit.Value, "`\"")
				switch {
				case strings.HasSuffix(key, "_ms"), strings.HasSuffix(key, "_us"), strings.HasSuffix(key, "_ns"):
					report(lit, "key %q: durations are seconds, under a key ending in _s", key)
				case strings.HasSuffix(key, "_s"):
					if b, ok := info.TypeOf(list[i+1]).Underlying().(*types.Basic); !ok || b.Info()&types.IsFloat == 0 {
						report(lit, "key %q: its value is seconds, a float", key)
					}
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.CompositeLit:
				if isAnySlice(info.TypeOf(x)) {
					args(x.Elts)
				}
			case *ast.CallExpr:
				if id, ok := ast.Unparen(x.Fun).(*ast.Ident); ok && id.Name == "append" && isAnySlice(info.TypeOf(x)) {
					args(x.Args[1:])
				}
				name := slogCallee(info, x)
				if name == "Duration" || name == "DurationValue" {
					report(x, "slog.%s: give seconds, slog.Float64 under a key ending in _s", name)
				}
				if name != "" {
					args(x.Args)
				}
			}
			return true
		})
	})
	for _, b := range bad {
		t.Error(b)
	}
}
