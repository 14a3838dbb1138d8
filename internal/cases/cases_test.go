package cases

import "testing"

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
