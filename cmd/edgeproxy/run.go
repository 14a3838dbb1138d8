package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	config := fs.String("config", "", "configuration `file` (empty: the embedded demo)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("run: unexpected argument %q", fs.Arg(0))
	}
	if *config != "" {
		return fmt.Errorf("run: --config is not supported yet")
	}
	return runDemo(ctx, stdout)
}

// runDemo steers 127.1.0.0/16 tcp/8080 to a built-in responder, through an
// unpinned dispatcher: stopping leaves the machine as it was.
func runDemo(ctx context.Context, stdout io.Writer) error {
	d, err := dispatch.Open(dispatch.Options{})
	if err != nil {
		return err
	}
	defer d.Close()

	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // the sockmap refuses MPTCP sockets
	ln, err := lc.Listen(ctx, "tcp", "[::]:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go serveDemo(ln)
	if err := d.Register("demo/tcp", ln.(*net.TCPListener)); err != nil {
		return err
	}
	table := &dispatch.Table{
		Owners: map[dispatch.Owner]dispatch.Policy{1: {Kind: dispatch.KindPorts, Ports: map[dispatch.ProtoPort]string{
			{Protocol: dispatch.TCP, Port: 8080}: "demo/tcp",
		}}},
		Bindings: []dispatch.Binding{{Prefix: netip.MustParsePrefix("127.1.0.0/16"), Owner: 1}},
	}
	if err := d.Replace(table); err != nil {
		return err
	}
	if err := d.Attach(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `edgeproxy %s demo: sk_lookup steers 127.1.0.0/16 tcp/8080 to one listener (%s)
try:   curl http://127.1.2.3:8080/   (any address of 127.1.0.0/16 answers)
       curl http://127.1.2.3:8081/   (refused: the owner does not serve that port)
stop with Ctrl-C; the program detaches and the machine is as it was
`, version, ln.Addr())

	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			reportCounters(stdout, d)
			return nil
		case <-tick.C:
			reportCounters(stdout, d)
		}
	}
}

func reportCounters(w io.Writer, d *dispatch.Dispatcher) {
	v, err := d.Verdicts()
	if err != nil {
		fmt.Fprintln(w, "counters:", err)
		return
	}
	fmt.Fprintf(w, "lookups: %d steered, %d refused, %d failed, %d to the kernel\n", v.Steer, v.Refuse, v.Fail, v.NoMatch+v.Pass)
}

func serveDemo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4096)
			c.Read(buf)
			body := fmt.Sprintf("hello from edgeproxy: you dialled %s, sk_lookup steered you to %s\n", c.LocalAddr(), ln.Addr())
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		}()
	}
}
