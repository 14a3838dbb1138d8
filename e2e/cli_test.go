package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestCLIPrefixesAndIDPrefixes: through the binary, prefixes add, list
// and delete (refused with bindings inside, naming --cascade, then with
// it); a binding added by its bare address and named by a prefix of its
// id; flags after the command's words.
func TestCLIPrefixesAndIDPrefixes(t *testing.T) {
	ns := netns.New(t)
	in := startInstance(t, ns, `store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
`)
	out, errOut, code := in.cli("prefixes", "add", "198.51.100.0/24", "spectrum", "--admin", in.admin)
	if code != 0 || !strings.HasPrefix(out, "added prefix 198.51.100.0/24 -> spectrum (id ") {
		t.Fatalf("prefixes add: %d %q %q", code, out, errOut)
	}
	pfx := strings.TrimSuffix(strings.TrimPrefix(out, "added prefix 198.51.100.0/24 -> spectrum (id "), ")\n")

	out, errOut, code = in.cli("bindings", "add", "198.51.100.7", "spectrum", "--json", "--admin", in.admin)
	var b struct {
		ID       string `json:"id"`
		CIDR     string `json:"cidr"`
		PrefixID string `json:"prefix_id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil || b.CIDR != "198.51.100.7/32" || b.PrefixID != pfx {
		t.Fatalf("bindings add of an address, --json after: %d %q %q", code, out, errOut)
	}
	out, _, code = in.cli("--admin", in.admin, "prefixes", "list")
	if code != 0 || !strings.Contains(out, pfx+"  198.51.100.0/24  spectrum  api     1\n") || !strings.Contains(out, "192.0.2.0/24     spectrum  config  0\n") {
		t.Fatalf("prefixes list: %d\n%s", code, out)
	}
	out, _, code = in.cli("bindings", "--admin", in.admin, "list")
	if code != 0 || !strings.Contains(out, b.ID+"  "+pfx+"  198.51.100.7/32") {
		t.Fatalf("bindings list shows no prefix id: %d\n%s", code, out)
	}

	// The prefix is refused while the binding is inside; the error names
	// the command that deletes both.
	_, errOut, code = in.cli("prefixes", "delete", pfx[:6], "--admin", in.admin)
	if code != 1 || !strings.Contains(errOut, "has 1 bindings") || !strings.Contains(errOut, "edgeproxy prefixes delete "+pfx+" --cascade") {
		t.Fatalf("prefixes delete with a binding inside: %d %q", code, errOut)
	}
	out, errOut, code = in.cli("bindings", "move", b.ID[:5], "cdn", "--admin", in.admin)
	if code != 0 || !strings.Contains(out, "moved 198.51.100.7/32 * from spectrum to cdn (id "+b.ID) {
		t.Fatalf("move by a prefix of the id: %d %q %q", code, out, errOut)
	}
	out, errOut, code = in.cli("prefixes", "delete", "--admin", in.admin, pfx[:6], "--cascade")
	if code != 0 || out != "deleted prefix 198.51.100.0/24 -> spectrum (id "+pfx+") and its 1 binding(s)\n" {
		t.Fatalf("prefixes delete --cascade: %d %q %q", code, out, errOut)
	}
	out, _, code = in.cli("prefixes", "list", "--admin", in.admin)
	if code != 0 || strings.Contains(out, "198.51.100.0/24") {
		t.Fatalf("the prefix is still listed: %d\n%s", code, out)
	}
	_, errOut, code = in.cli("bindings", "delete", b.ID[:5], "--admin", in.admin)
	if code != 1 || !strings.Contains(errOut, "no binding with id prefix "+b.ID[:5]) {
		t.Fatalf("the binding went with its prefix: %d %q", code, errOut)
	}
}
