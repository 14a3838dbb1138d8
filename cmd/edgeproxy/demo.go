package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// demoOrigins are the built-in origins of the embedded demo, on loopback:
// a TCP and UDP echo on 17007, and on 17100-17999 a TCP service that reads
// the PROXY v1 header spectrum sends and says what it found.
type demoOrigins struct {
	closers []io.Closer
}

func startDemoOrigins(ctx context.Context) (*demoOrigins, error) {
	d := &demoOrigins{}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:17007")
	if err != nil {
		return nil, fmt.Errorf("demo origin: %w", err)
	}
	d.closers = append(d.closers, ln)
	go acceptLoop(ln, serveEcho)
	pc, err := lc.ListenPacket(ctx, "udp", "127.0.0.1:17007")
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("demo origin: %w", err)
	}
	d.closers = append(d.closers, pc)
	go serveUDPEcho(pc)
	// The whoami app maps edge ports 1000-1999 onto 17100-17999; the demo
	// listens on the first ten.
	for port := 17100; port < 17110; port++ {
		ln, err := lc.Listen(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("demo origin: %w", err)
		}
		d.closers = append(d.closers, ln)
		go acceptLoop(ln, serveWhoami)
	}
	return d, nil
}

func (d *demoOrigins) Close() error {
	for _, c := range d.closers {
		c.Close()
	}
	return nil
}

func acceptLoop(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			serve(c)
		}()
	}
}

func serveEcho(c net.Conn) {
	fmt.Fprintf(c, "demo echo origin on %s: the connection comes from %s (spectrum's side); type lines, they come back\n", c.LocalAddr(), c.RemoteAddr())
	io.Copy(c, c)
}

func serveWhoami(c net.Conn) {
	h, err := proxyproto.Read(bufio.NewReader(c))
	if err != nil {
		fmt.Fprintf(c, "demo whoami origin: no PROXY header: %v\n", err)
		return
	}
	fmt.Fprintf(c, "demo whoami origin on %s: the PROXY v%d header says the client is %s and dialled %s\n", c.LocalAddr(), h.Version, h.SourceAddr, h.DestinationAddr)
}

func serveUDPEcho(pc net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		reply := fmt.Sprintf("demo echo origin: %q from %s\n", strings.TrimSpace(string(buf[:n])), from)
		pc.WriteTo([]byte(reply), from)
	}
}

// cmdDial sends a message over TCP or UDP and prints the answer, for trying
// spectrum apps: `edgeproxy dial [--udp] ADDR:PORT [MESSAGE]`.
func cmdDial(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dial", stderr)
	udp := fs.Bool("udp", false, "use UDP (the answer must come from ADDR:PORT)")
	wait := fs.Duration("wait", 2*time.Second, "how long to wait for answers")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usagef("usage: edgeproxy dial [--udp] [--wait 2s] ADDR:PORT [MESSAGE]")
	}
	msg := "hello"
	if fs.NArg() == 2 {
		msg = fs.Arg(1)
	}
	network := "tcp"
	if *udp {
		network = "udp"
	}
	c, err := net.DialTimeout(network, fs.Arg(0), *wait)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(*wait))
	got := false
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			got = true
			fmt.Fprint(stdout, line)
			if *udp {
				fmt.Fprintf(stdout, "  (from %s, the address and port dialled: the socket is connected)\n", c.RemoteAddr())
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && got {
				return nil
			}
			if errors.Is(err, io.EOF) && got {
				return nil
			}
			return fmt.Errorf("no answer from %s: %v", fs.Arg(0), err)
		}
	}
}
