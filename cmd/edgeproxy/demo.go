package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/quic-go/quic-go/http3"
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
	// The cdn's demo site: two origins, the second for /api/.
	for _, o := range []struct{ addr, name string }{{"127.0.0.1:17080", "main"}, {"127.0.0.1:17081", "api"}} {
		ln, err := lc.Listen(ctx, "tcp", o.addr)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("demo origin: %w", err)
		}
		d.closers = append(d.closers, ln)
		name := o.name
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "hello from the demo origin %q: %s %s, Host %s\n", name, r.Method, r.URL.Path, r.Host)
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "Forwarded", "X-Edge-Addr", "CDN-Loop", "X-Request-Id"} {
				fmt.Fprintf(w, "  %s: %s\n", h, r.Header.Get(h))
			}
		}))
	}
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
	wait := fs.Duration("wait", 2*time.Second, "how long to wait for the connection, and then for the answers")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usagef("%s", usageLine("dial"))
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

// cmdGet fetches a URL and prints the response, for trying the cdn:
// `edgeproxy get [--http3] [-k] URL`. Over HTTP/3 it uses quic-go's client.
func cmdGet(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("get", stderr)
	h3 := fs.Bool("http3", false, "use HTTP/3 (QUIC)")
	insecure := fs.Bool("k", false, "do not verify the server's certificate")
	head := fs.Bool("I", false, "print the status and headers only")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("%s", usageLine("get"))
	}
	tlsConf := &tls.Config{InsecureSkipVerify: *insecure}
	var rt http.RoundTripper = &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true}
	if *h3 {
		t := &http3.Transport{TLSClientConfig: tlsConf}
		defer t.Close()
		rt = t
	}
	c := &http.Client{Transport: rt, Timeout: 10 * time.Second}
	resp, err := c.Get(fs.Arg(0))
	if err != nil {
		if !*insecure && unknownAuthority(err) {
			return fmt.Errorf("%v\n  the server's certificate is not signed by an authority this machine trusts (the demo's is self-signed): -k fetches without checking it", err)
		}
		return err
	}
	defer resp.Body.Close()
	fmt.Fprintf(stdout, "%s %s\n", resp.Proto, resp.Status)
	for _, k := range slices.Sorted(maps.Keys(resp.Header)) {
		fmt.Fprintf(stdout, "%s: %s\n", k, strings.Join(resp.Header[k], ", "))
	}
	if *head {
		return nil
	}
	fmt.Fprintln(stdout)
	_, err = io.Copy(stdout, resp.Body)
	return err
}

// unknownAuthority reports whether err is a certificate that no trusted
// authority signed. Over HTTP/3 the TLS error reaches the client as the
// QUIC connection's error text only.
func unknownAuthority(err error) bool {
	var ua x509.UnknownAuthorityError
	return errors.As(err, &ua) || strings.Contains(err.Error(), "certificate signed by unknown authority")
}

// cmdDemoOrigin is the hidden "demo-origin ADDR NAME": a TCP origin that
// answers every line with "NAME: line", until stopped. make demo-fleet
// runs one in each node's namespace, so that a probe says which node's
// spectrum answered.
func cmdDemoOrigin(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return usagef("usage: edgeproxy demo-origin ADDR NAME")
	}
	name := args[1]
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", args[0])
	if err != nil {
		return fmt.Errorf("demo origin: %w", err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	acceptLoop(ln, func(c net.Conn) {
		defer c.Close()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			if _, err := fmt.Fprintf(c, "%s: %s\n", name, sc.Text()); err != nil {
				return
			}
		}
	})
	return nil
}
