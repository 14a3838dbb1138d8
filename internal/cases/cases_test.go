package cases

import (
	"bytes"
	"os"
	"testing"
)

// TestSharedCopy keeps the embedded copy equal to the shared file when the
// shared tree sits beside the repository (it does on developer machines; a
// lone clone has only the copy).
func TestSharedCopy(t *testing.T) {
	shared, err := os.ReadFile("../../../shared/cases/bindings.yaml")
	if os.IsNotExist(err) {
		t.Log("no ../shared beside the repository; the embedded copy stands alone")
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shared, raw) {
		t.Fatal("internal/cases/bindings.yaml differs from ../shared/cases/bindings.yaml: copy it over")
	}
}

func TestLoad(t *testing.T) {
	f, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Cases) < 4 || len(f.Invalid) < 9 {
		t.Fatalf("got %d cases and %d invalid states, want at least 4 and 9", len(f.Cases), len(f.Invalid))
	}
	for _, c := range f.Cases {
		if len(c.Probes) == 0 {
			t.Errorf("case %s has no probes", c.Name)
		}
	}
}
