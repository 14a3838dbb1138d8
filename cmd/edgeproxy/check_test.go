package main

import (
	"testing"

	"github.com/edgeproxy/edgeproxy/server"
)

// TestDemoChecks: the embedded demo, loaded as run loads it (its
// certificate made), reads every file as a start does and warns of
// nothing.
func TestDemoChecks(t *testing.T) {
	cfg, cleanup, err := loadPlan("")
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	if err := server.Check(cfg); err != nil {
		t.Errorf("the demo: %v", err)
	}
	if ws := cfg.Warnings(nil); len(ws) > 0 {
		t.Errorf("the demo warns: %v", ws)
	}
}
