// Package dispatch owns edgeproxy's sk_lookup program: it loads and attaches
// it to the network namespace the calling thread runs in, pins it, registers
// the services' sockets under labels, writes the steering Table into the
// program's maps atomically, and reads the program's counters.
//
// The package knows no service names. Its tables speak of owners (numbers
// with a Policy), labels (names of registered sockets) and verdicts; package
// bindings fills them. It never logs: errors carry what went wrong.
//
// The table model (Table, its Validate and Decide, and its compilation into
// map entries) is plain Go and builds on every system; what speaks to the
// kernel builds on Linux only.
package dispatch

// DefaultPinDir is where pinned state lives unless configured otherwise.
const DefaultPinDir = "/sys/fs/bpf/edgeproxy"
