package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// lastSchema1Release is the last commit whose data plane has schema 1,
// before the per-binding counters: the release a node runs when it
// upgrades to the layout with them.
const lastSchema1Release = "0d6af5426394fcaa818dbc05fc2f3309c32d25fb"

// schema1 is the binary of lastSchema1Release, built once.
var schema1 struct {
	once sync.Once
	path string
	err  error
}

// schema1Binary builds the edgeproxy of lastSchema1Release from this
// repository's history (a clone with its full history; the build takes
// its modules from the module cache or the proxy), reporting version
// "schema1".
func schema1Binary(t *testing.T) string {
	t.Helper()
	schema1.once.Do(func() {
		start := time.Now()
		schema1.path, schema1.err = buildRelease(lastSchema1Release, "schema1")
		t.Logf("built %s in %v", lastSchema1Release[:12], time.Since(start).Round(time.Millisecond))
	})
	if schema1.err != nil {
		t.Fatal(schema1.err)
	}
	return schema1.path
}

// buildRelease builds ./cmd/edgeproxy of commit, exported from the
// repository (exportRelease), into the test binary's directory, with the
// version set to version.
func buildRelease(commit, version string) (string, error) {
	run := func(dir, name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	repo, err := run(".", "git", "rev-parse", "--show-toplevel")
	if err != nil {
		return "", err
	}
	if _, err := run(repo, "git", "cat-file", "-e", commit+"^{commit}"); err != nil {
		return "", fmt.Errorf("commit %s is not in %s (a shallow clone? fetch its full history): %v", commit, repo, err)
	}
	src, err := exportRelease(repo, commit, run)
	if err != nil {
		return "", err
	}
	out := filepath.Join(filepath.Dir(binary), "edgeproxy-"+version)
	if _, err := run(src, "go", "build", "-ldflags", "-X main.version="+version, "-o", out, "./cmd/edgeproxy"); err != nil {
		return "", err
	}
	return out, nil
}

// TestUpgradeFromSchema1UnderLoad: a node of the last release with
// schema 1 upgrades live, by SIGUSR2, to this binary, whose data plane has
// another layout (per-binding counters), and rolls back to it, under the
// whole load mix: nothing fails, nothing is reset, the long-lived
// connections are told to go or kept until each old process's grace ends.
// In between, the new process counts each binding's traffic in its pinned
// maps.
func TestUpgradeFromSchema1UnderLoad(t *testing.T) {
	old := schema1Binary(t)
	const grace = 3 * time.Second
	f := newMixFixture(t, "shutdown_grace: 3s\n")
	body := strings.Replace(f.body, "store: {path: \"\"}\n", "", 1)
	u := startUpgradableFrom(t, f.ns, old, body)
	if st := u.hc(); st.Version != "schema1" {
		t.Fatalf("the first process: %+v, want version schema1", st)
	}
	if _, err := dispatch.PinnedBindingCounters(u.pin); !errors.Is(err, dispatch.ErrStale) {
		t.Fatalf("the schema 1 maps: %v, want ErrStale", err)
	}
	mix := startLoadMix(t, f.ns, f.mixAll("192.0.2.10"))
	upgradeUnderLoad(t, u, mix, grace, 0, [2]string{binary, "dev"})
	checkBindingCounts(t, f.ns, u.pin)
	upgradeUnderLoad(t, u, mix, grace, 1, [2]string{old, "schema1"})
	r := mix.stop()
	t.Logf("the mix through the upgrade from schema 1 and back:%v", r)
	requireUpgradesClean(t, r, 2)
	if _, err := dispatch.PinnedBindingCounters(u.pin); !errors.Is(err, dispatch.ErrStale) {
		t.Errorf("after the roll back to schema 1: %v, want ErrStale", err)
	}
	if _, err := os.Stat(filepath.Join(u.pin, "binding_counters")); err == nil {
		t.Errorf("the per-binding counters are still pinned after the roll back to schema 1")
	}
}

// checkBindingCounts checks that the process serving the mix of
// newMixFixture counts its bindings' traffic in the maps pinned in pin:
// the mix's steered, nothing refused or missed, and new connections
// charged to their binding.
func checkBindingCounts(t *testing.T, ns *netns.NS, pin string) {
	t.Helper()
	cdn := dispatch.BindingKey{Prefix: netip.MustParsePrefix("192.0.2.0/24")}
	spectrum := dispatch.BindingKey{Prefix: netip.MustParsePrefix("198.51.100.0/24")}
	before, err := dispatch.PinnedBindingCounters(pin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("binding counters of the new process: %v", before)
	for _, k := range []dispatch.BindingKey{cdn, spectrum} {
		if c := before[k]; c.Steered == 0 || c.Refused+c.Missed != 0 {
			t.Errorf("%s: %+v, want the mix's traffic steered, nothing refused or missed", k, c)
		}
	}
	const conns = 5
	for _, dst := range []string{"192.0.2.10:80", "198.51.100.7:7"} {
		for range conns {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := ns.Dial(ctx, &net.Dialer{}, "tcp", dst)
			cancel()
			if err != nil {
				t.Fatalf("dial %s: %v", dst, err)
			}
			c.Close()
		}
	}
	after, err := dispatch.PinnedBindingCounters(pin)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []dispatch.BindingKey{cdn, spectrum} {
		if got := after[k].Steered - before[k].Steered; got < conns {
			t.Errorf("%s: %d more steered after %d connections, want at least %d", k, got, conns, conns)
		}
	}
}

// exportRelease returns a directory that holds the tree of commit: one of
// the user's cache, the same for every run, so that the build cache, whose
// keys name the packages' directories, serves later runs. A run that finds
// none exports the tree beside it and renames it into place in one step.
func exportRelease(repo, commit string, run func(dir, name string, args ...string) (string, error)) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	parent := filepath.Join(cache, "edgeproxy-e2e")
	src := filepath.Join(parent, commit)
	if _, err := os.Stat(filepath.Join(src, "go.mod")); err == nil {
		return src, nil
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(parent, commit+".*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	tarball := filepath.Join(tmp, "src.tar")
	if _, err := run(repo, "git", "archive", "-o", tarball, commit); err != nil {
		return "", err
	}
	tree := filepath.Join(tmp, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return "", err
	}
	if _, err := run(tree, "tar", "-xf", tarball); err != nil {
		return "", err
	}
	if err := os.Rename(tree, src); err != nil {
		if _, serr := os.Stat(filepath.Join(src, "go.mod")); serr != nil {
			return "", fmt.Errorf("export %s: %w", commit, err)
		}
		// Another run put it there first: the same tree.
	}
	return src, nil
}
