package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// The documentation prefixes a run routes to lo inside its own network
// namespace: systems listen on them and clients dial them, steered by
// edgeproxy's dispatcher where a scenario says so.
var DocPrefixes = []string{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"}

const inNetnsEnv = "EDGEBENCH_IN_NETNS"

// InOwnNetns runs the calling program again in a new network namespace of
// its own (unshare --net), with lo up and the documentation prefixes
// routed to it, and returns its exit code: the caller exits with it. In the
// program run again, it prepares the namespace and reports done=false: go on.
func InOwnNetns() (code int, done bool) {
	if os.Getenv(inNetnsEnv) == "1" {
		if err := PrepareNetns(); err != nil {
			fmt.Fprintln(os.Stderr, "edgebench:", err)
			return 1, true
		}
		return 0, false
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgebench:", err)
		return 1, true
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), true
		}
		fmt.Fprintln(os.Stderr, "edgebench: a network namespace of its own (needs root):", err)
		return 1, true
	}
	return 0, true
}

// PrepareNetns brings lo up in the current namespace, routes the
// documentation prefixes to it, and lets connection-rate scenarios reuse
// TIME_WAIT ports.
func PrepareNetns() error {
	cmds := [][]string{{"ip", "link", "set", "lo", "up"}}
	for _, p := range DocPrefixes {
		cmds = append(cmds, []string{"ip", "route", "add", "local", p, "dev", "lo"})
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil && !strings.Contains(string(out), "File exists") {
			return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	for k, v := range map[string]string{
		"net/ipv4/tcp_tw_reuse":        "1",
		"net/ipv4/ip_local_port_range": "10000 65000",
		// The scenarios listen on 18000-18999: no client may take them.
		"net/ipv4/ip_local_reserved_ports": "18000-18999",
	} {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	return nil
}
