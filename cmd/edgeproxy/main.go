// Command edgeproxy is the edge server: the sk_lookup dispatcher and the
// services whose sockets it steers to. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := stopContext(context.Background())
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "edgeproxy:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "edgeproxy:", err)
		os.Exit(1)
	}
}

// stopSignal is the cause of a context that stopContext cancelled.
type stopSignal struct{ sig os.Signal }

func (s stopSignal) Error() string { return "stopped by " + s.sig.String() }

// againKey is the context key of the signals after the first.
type againKey struct{}

// stopContext returns a context cancelled by the first SIGINT or SIGTERM,
// with that signal as its cause (stopSignal). The signals after it arrive
// on the channel againSignals returns: `run` cuts its drain short at the
// second. stop ends the watch.
func stopContext(parent context.Context) (_ context.Context, stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	again := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancelCause(parent)
	ctx = context.WithValue(ctx, againKey{}, (<-chan os.Signal)(again))
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(stopSignal{s})
		case <-done:
			return
		}
		for {
			select {
			case s := <-sigs:
				select {
				case again <- s:
				default: // one is waiting already
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel(context.Canceled)
		})
	}
}

// againSignals returns the channel of the SIGINTs and SIGTERMs after the
// one that stopped ctx, nil (never ready) for a context stopContext did not
// make.
func againSignals(ctx context.Context) <-chan os.Signal {
	c, _ := ctx.Value(againKey{}).(<-chan os.Signal)
	return c
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// helpError is -h or --help given to a command: its usage goes to stdout
// and the exit code is 0.
type helpError struct{ fs *flag.FlagSet }

func (e helpError) Error() string { return e.fs.Name() + ": help requested" }

const usage = `usage: edgeproxy COMMAND [flags] [args]   (flags go anywhere on the line)

commands:
  run [--config FILE]   run the edge server (no --config: the embedded demo; needs root)
  check --config FILE   load a configuration file as run would (--strict: warnings fail too)
  unload [--pin-dir D]  remove pinned dispatcher state (default /sys/fs/bpf/edgeproxy)
  version               print the version (also --version, anywhere)

client commands (talk to a running instance's admin API):
  prefixes list                                the onboarded prefixes: id, cidr, service, source, bindings
  prefixes add CIDR SERVICE                    onboard a prefix to a service
  prefixes delete [--cascade] ID               (--cascade: its bindings too)
  bindings list                                every binding, with its prefix's id
  bindings add [--port tcp/443] CIDR SERVICE   (the prefix is found by containment)
  bindings move [--drain 30s] ID SERVICE      (--drain: then close what stays on the moved addresses)
  bindings delete [--drain 30s] ID
  bindings promote ID | rollback ID            settle a binding's canary change
  bindings batch FILE                          one binding a line: CIDR SERVICE [PROTO/PORT] (- is stdin)
  bindings plan add|move|delete|batch ARGS     what the change would do to traffic, per port; changes nothing
    --wait 5s (add, move, delete, promote, rollback, batch): wait for every node in scope
    --canary KEY=VALUE (add, move; repeatable): the change goes first to the nodes so labelled
    --dry-run (add, move, delete, batch; prefixes add, delete): print the change's plan instead
  nodes                                        the fleet's nodes: labels, live, revision, state
  fleet                                        the fleet's summary
  audit [--since REV] [--limit N]              the changes, one a line
  lookup ADDR:PORT/PROTO                       (e.g. 192.0.2.1:443/tcp)
  status                                       the serving process: pid, version, start, state
  dial [--udp] [--wait 2s] ADDR:PORT [MESSAGE] send a line, print the answers until --wait passes quiet (try spectrum apps)
  get [--http3] [-k] [-I] URL                  fetch a URL, print the response (try the cdn; -k: skip the certificate check)
  client flags: --admin URL (default $EDGEPROXY_ADMIN, else http://127.0.0.1:9180),
  --token-file FILE, --json (print the result alone)
  ID: an id, or any unique prefix of it of at least 4 characters
  CIDR: a bare address is its /32 or /128
  COMMAND --help: the command's usage and flags

exit codes: 0 done (with --wait, also a change still pending, noted on stderr),
1 the API refused or failed, or a node refused the change, 2 usage
`

// synopses are the arguments of each command, for its usage line.
var synopses = map[string]string{
	"run":                  "[--config FILE]",
	"check":                "--config FILE",
	"unload":               "[--pin-dir DIR]",
	"prefixes list":        "",
	"prefixes add":         "[--dry-run] CIDR SERVICE",
	"prefixes delete":      "[--cascade] [--dry-run] ID",
	"bindings list":        "",
	"bindings add":         "[--port tcp/443] [--wait 5s] [--canary KEY=VALUE] [--dry-run] CIDR SERVICE",
	"bindings move":        "[--drain 30s] [--wait 5s] [--canary KEY=VALUE] [--dry-run] ID SERVICE",
	"bindings delete":      "[--drain 30s] [--wait 5s] [--dry-run] ID",
	"bindings promote":     "[--wait 5s] ID",
	"bindings rollback":    "[--wait 5s] ID",
	"bindings batch":       "[--wait 5s] [--dry-run] FILE",
	"bindings plan":        "add|move|delete|batch ARGS  (the command with --dry-run)",
	"bindings plan add":    "[--port tcp/443] CIDR SERVICE",
	"bindings plan move":   "ID SERVICE",
	"bindings plan delete": "ID",
	"bindings plan batch":  "FILE",
	"nodes":                "",
	"fleet":                "",
	"audit":                "[--since REV] [--limit N]",
	"lookup":               "ADDR:PORT/PROTO",
	"status":               "",
	"dial":                 "[--udp] [--wait 2s] ADDR:PORT [MESSAGE]",
	"get":                  "[--http3] [-k] [-I] URL",
}

// usageLine is "usage: edgeproxy NAME ARGS" for the command name.
func usageLine(name string) string {
	return strings.TrimSpace("usage: edgeproxy " + name + " " + synopses[name])
}

// groupUsage is the usage of a command of subcommands: each one's line.
func groupUsage(group string, subs ...string) string {
	var b strings.Builder
	b.WriteString("usage:\n")
	for _, sub := range subs {
		fmt.Fprintf(&b, "  %s\n", strings.TrimPrefix(usageLine(group+" "+sub), "usage: "))
	}
	b.WriteString("client flags, anywhere on the line: --admin URL, --token-file FILE, --json\n")
	b.WriteString("ID: an id, or any unique prefix of it of at least 4 characters; COMMAND --help: its flags\n")
	return b.String()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if hasFlag(args, "version") {
		fmt.Fprintln(stdout, "edgeproxy", version)
		return nil
	}
	cmd, rest, ok := splitWord(args)
	if !ok {
		if hasFlag(args, "help", "h") {
			fmt.Fprint(stdout, usage)
			return nil
		}
		fmt.Fprint(stderr, usage)
		if len(args) > 0 {
			return usagef("no command, only flags: %s", strings.Join(args, " "))
		}
		return usagef("no command")
	}
	err := runCommand(ctx, cmd, rest, stdout, stderr)
	var he helpError
	if errors.As(err, &he) {
		he.fs.SetOutput(stdout)
		he.fs.Usage()
		return nil
	}
	return err
}

func runCommand(ctx context.Context, cmd string, rest []string, stdout, stderr io.Writer) error {
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "unload":
		return cmdUnload(rest, stdout, stderr)
	case "prefixes":
		return cmdPrefixes(rest, stdout, stderr)
	case "bindings":
		return cmdBindings(rest, stdout, stderr)
	case "lookup":
		return cmdLookup(rest, stdout, stderr)
	case "demo-origin": // hidden: make demo-fleet's origins
		return cmdDemoOrigin(ctx, rest)
	case "nodes":
		return cmdNodes(rest, stdout, stderr)
	case "fleet":
		return cmdFleet(rest, stdout, stderr)
	case "audit":
		return cmdAudit(rest, stdout, stderr)
	case "status":
		return cmdStatus(rest, stdout, stderr)
	case "dial":
		return cmdDial(rest, stdout, stderr)
	case "get":
		return cmdGet(rest, stdout, stderr)
	case "version":
		if _, _, more := splitWord(rest); more {
			return usagef("version takes no arguments")
		}
		fmt.Fprintln(stdout, "edgeproxy", version)
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usagef("unknown command %q", cmd)
	}
}

// valueFlags are the flags, of any command, that take a value: the words
// of a command line (its command, subcommand and arguments) are what is
// neither a flag nor the value of one.
var valueFlags = map[string]bool{
	"admin": true, "token-file": true, "config": true, "pin-dir": true,
	"port": true, "drain": true, "wait": true, "canary": true, "since": true, "limit": true,
}

// flagName is the name of the flag arg ("--port=x": "port"), and whether
// arg is a flag at all ("-" and "--" are not).
func flagName(arg string) (name string, inline, ok bool) {
	if len(arg) < 2 || arg[0] != '-' || arg == "--" {
		return "", false, false
	}
	name = strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	name, _, inline = strings.Cut(name, "=")
	return name, inline, true
}

// splitWord returns the first word of args and args without it, flags
// (and their values) where they were; false if args has no word. After
// "--" every argument is a word.
func splitWord(args []string) (string, []string, bool) {
	for i := 0; i < len(args); i++ {
		if args[i] == "--" {
			if i+1 == len(args) {
				return "", args, false
			}
			rest := append(slices.Clone(args[:i+1]), args[i+2:]...)
			return args[i+1], rest, true
		}
		name, inline, ok := flagName(args[i])
		if !ok {
			return args[i], append(slices.Clone(args[:i]), args[i+1:]...), true
		}
		if valueFlags[name] && !inline {
			i++ // its value
		}
	}
	return "", args, false
}

// hasFlag reports whether args hold one of the flags names (not as the
// value of another flag, nor after "--").
func hasFlag(args []string, names ...string) bool {
	for i := 0; i < len(args); i++ {
		if args[i] == "--" {
			return false
		}
		name, inline, ok := flagName(args[i])
		switch {
		case !ok:
		case slices.Contains(names, name):
			return true
		case valueFlags[name] && !inline:
			i++
		}
	}
	return false
}

// newFlags returns a flag set that reports errors as usage errors, and
// whose usage is the command's line and its flags.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	return fs
}

// printUsage writes the usage of fs's command: its line and its flags.
func printUsage(fs *flag.FlagSet) {
	fmt.Fprintln(fs.Output(), usageLine(fs.Name()))
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintln(fs.Output(), "flags (anywhere on the line):")
			first = false
		}
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		value, text := flag.UnquoteUsage(f)
		if value != "" {
			value = " " + value
		}
		if f.DefValue != "" && f.DefValue != "false" {
			text += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(fs.Output(), "  %s%s%s\n    \t%s\n", dash, f.Name, value, text)
	})
}

// parseFlags parses args, flags anywhere among the arguments: fs.Args()
// is then the arguments in their order. After "--" everything is an
// argument. -h or --help is a helpError; any other mistake a usageError,
// after the command's usage on fs's output.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.Usage = func() {}
	var words []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.Usage = func() { printUsage(fs) }
				return helpError{fs}
			}
			printUsage(fs)
			return usagef("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			words = append(words, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		words = append(words, rest[0])
		args = rest[1:]
	}
	fs.Usage = func() { printUsage(fs) }
	return fs.Parse(append([]string{"--"}, words...))
}
