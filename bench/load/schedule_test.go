package load

import (
	"runtime"
	"testing"
)

func TestTwoProcs(t *testing.T) {
	old := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(old)
	r1, r2 := twoProcs(), twoProcs()
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Fatalf("GOMAXPROCS %d during an open loop, want 2", n)
	}
	r1()
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Fatalf("GOMAXPROCS %d with one user left, want 2", n)
	}
	r2()
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("GOMAXPROCS %d after, want 1 again", n)
	}
}
