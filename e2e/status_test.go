package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestStatusCommand: `edgeproxy status` names the process that serves the
// node: its pid, version, start and state.
func TestStatusCommand(t *testing.T) {
	ns := netns.New(t)
	before := time.Now()
	in := startInstance(t, ns, `node: edge-7
store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
`)
	os.Setenv("EDGEPROXY_ADMIN", in.admin)
	defer os.Unsetenv("EDGEPROXY_ADMIN")

	out, errOut, code := in.cli("status", "--json")
	var st struct {
		Node      string    `json:"node"`
		PID       int       `json:"pid"`
		Version   string    `json:"version"`
		StartedAt time.Time `json:"started_at"`
		State     string    `json:"state"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status --json: %d %q %q", code, out, errOut)
	}
	if st.Node != "edge-7" || st.PID != in.cmd.Process.Pid || st.State != "serving" || st.Version == "" ||
		st.StartedAt.Before(before.Add(-time.Second)) || st.StartedAt.After(time.Now()) {
		t.Errorf("status: %+v, want node edge-7, pid %d, serving, a version, started since %v", st, in.cmd.Process.Pid, before)
	}
	out, _, code = in.cli("status")
	if want := fmt.Sprintf("edge-7: serving, pid %d, version %s, started ", st.PID, st.Version); code != 0 || !strings.HasPrefix(out, want) {
		t.Errorf("status: %d %q, want it to start %q", code, out, want)
	}
	if _, _, code := in.cli("status", "extra"); code != 2 {
		t.Errorf("status with an argument: exit %d, want 2 (usage)", code)
	}
}
