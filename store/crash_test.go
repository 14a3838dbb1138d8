package store

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// committerEnv, set, makes TestMain's process the committer of
// TestKillDuringCommits: it commits bindings one by one into the store it
// names and prints each revision once Commit has returned.
const committerEnv = "EDGEPROXY_STORE_COMMITTER"

func TestMain(m *testing.M) {
	if path := os.Getenv(committerEnv); path != "" {
		commitForever(path)
		return
	}
	os.Exit(m.Run())
}

func commitForever(path string) {
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := s.Commit(1, create(p24)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for rev := int64(2); ; rev++ {
		b := inside(p24, bindings.NewBinding(netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(rev)}), 32), 0, 0, bindings.CDN, bindings.FromAPI))
		m := create(b)
		if rev > 255 {
			m = bindings.Mutation{Update: []bindings.Record{bindings.EncodeBinding(inside(p24, bindings.NewBinding(netip.MustParsePrefix("192.0.2.2/32"), 0, 0, bindings.CDN, bindings.FromAPI)))}}
		}
		m.Audit = &bindings.AuditEntry{Action: "create"}
		if err := s.Commit(rev, m); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(rev)
	}
}

// TestKillDuringCommits: a process killed (SIGKILL) in a burst of commits
// loses none it acknowledged. While it runs, an Open names its pid.
func TestKillDuringCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bindings.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), committerEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var acked int64
	for sc.Scan() {
		if acked, err = strconv.ParseInt(sc.Text(), 10, 64); err != nil {
			t.Fatal(err)
		}
		if acked == 100 {
			break
		}
	}
	// The committer holds the lock: another process's Open names it.
	_, err = Open(path, Options{Timeout: 50 * time.Millisecond})
	if want := fmt.Sprintf("store %s is in use by pid %d", path, cmd.Process.Pid); err == nil || err.Error() != want {
		t.Errorf("Open of the committer's store: %v, want %q", err, want)
	}
	cmd.Process.Kill()
	for sc.Scan() { // acknowledged before the kill took
		acked, _ = strconv.ParseInt(sc.Text(), 10, 64)
	}
	cmd.Wait()
	if acked < 100 {
		t.Fatalf("the committer acknowledged %d revisions", acked)
	}
	s := open(t, path, Options{})
	st, rev, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if rev < acked {
		t.Fatalf("after the kill: revision %d, the committer acknowledged %d", rev, acked)
	}
	if want := min(rev, 255) - 1; int64(len(st.Bindings)) != want {
		t.Fatalf("after the kill: %d bindings at revision %d, want %d", len(st.Bindings), rev, want)
	}
	if audit, err := s.Audit(0, 0); err != nil || int64(len(audit)) != rev-1 {
		t.Fatalf("after the kill: %d audit entries at revision %d, %v", len(audit), rev, err)
	}
}
