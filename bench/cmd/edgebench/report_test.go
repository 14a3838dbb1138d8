package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRunReadme(t *testing.T) {
	top := t.TempDir()
	t.Chdir(top)
	if err := os.WriteFile("README.md", []byte("# x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	def := filepath.Join(top, "bench", "results")
	if got := runReadme(def, false); got != "README.md" {
		t.Errorf("a full run into bench/results: %q, want README.md", got)
	}
	if got := runReadme(def, true); got != "" {
		t.Errorf("a tiny run: %q, want none", got)
	}
	if got := runReadme(filepath.Join(top, "elsewhere"), false); got != "" {
		t.Errorf("results elsewhere: %q, want none", got)
	}
}

func TestReportCommand(t *testing.T) {
	dir := t.TempDir()
	if code := reportCmd([]string{"-results", dir, "-readme", ""}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	if err != nil || len(b) == 0 {
		t.Fatalf("summary: %v %q", err, b)
	}
}
