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

const usage = `usage: edgeproxy COMMAND [flags] [args]

commands:
  run [--config FILE]   run the edge server (no --config: the embedded demo)
  check --config FILE   validate a configuration file
  unload [--pin-dir D]  remove pinned dispatcher state (default /sys/fs/bpf/edgeproxy)
  version               print the version

client commands (talk to a running instance's admin API):
  bindings list
  bindings add [--port tcp/443] CIDR SERVICE   (the prefix is found by containment)
  bindings move [--drain 30s] ID SERVICE      (--drain: then close what stays on the moved addresses)
  bindings delete [--drain 30s] ID
  bindings promote ID | rollback ID            settle a binding's canary change
  bindings batch FILE                          one binding a line: CIDR SERVICE [PROTO/PORT] (- is stdin)
    --wait 5s (add, move, delete, promote, rollback, batch): wait for every node in scope
    --canary KEY=VALUE (add, move; repeatable): the change goes first to the nodes so labelled
  nodes                                        the fleet's nodes: labels, live, revision, state
  fleet                                        the fleet's summary
  audit [--since REV] [--limit N]              the changes, one a line
  lookup ADDR:PORT/PROTO                       (e.g. 192.0.2.1:443/tcp)
  status                                       the serving process: pid, version, start, state
  dial [--udp] ADDR:PORT [MESSAGE]             send a line, print the answer (try spectrum apps)
  get [--http3] [-k] [-I] URL                  fetch a URL, print the response (try the cdn)
  client flags, before the arguments: --admin URL (default $EDGEPROXY_ADMIN,
  else http://127.0.0.1:9180), --token-file FILE, --json (print the result alone)

exit codes: 0 done (with --wait, also a change still pending, noted on stderr),
1 the API refused or failed, or a node refused the change, 2 usage
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "unload":
		return cmdUnload(rest, stdout, stderr)
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
		fmt.Fprintln(stdout, "edgeproxy", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usagef("unknown command %q", cmd)
	}
}

// newFlags returns a flag set that reports errors as usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return usagef("%s: help requested", fs.Name())
		}
		return usagef("%s: %v", fs.Name(), err)
	}
	return nil
}
