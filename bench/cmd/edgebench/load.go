package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/bench/load"
)

const loadUsage = `usage:
  edgebench load http -url URL [-proto h1|h2|h3] [-rate R] [-d 10s] [-c 16] [-streams 32] [-k] [-local IP] [-host H] [-H 'Name: value']
  edgebench load tcpconn -addr HOST:PORT [-c N] [-rate R] [-d 10s] [-request STRING] [-response N] [-reset] [-tls [-k]] [-local IP]
  edgebench load udp -addr HOST:PORT [-size 64] (-inflight N | -rate R [-sockets N]) [-d 10s] [-local IP]
-rate 0 (the default) is a closed loop: as fast as the answers come.
See docs/bench.md, "Load generators".`

// loadCmd runs one of the load generators by hand and prints a short
// report.
func loadCmd(args []string) int {
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, loadUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "http":
		err = loadHTTP(args[1:])
	case "tcpconn":
		err = loadTCPConn(args[1:])
	case "udp":
		err = loadUDP(args[1:])
	default:
		fmt.Fprintln(os.Stderr, loadUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgebench load:", err)
		return 1
	}
	return 0
}

type headers http.Header

func (h headers) String() string { return "" }
func (h headers) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	if !ok {
		return fmt.Errorf("header %q: want Name: value", s)
	}
	http.Header(h).Add(strings.TrimSpace(k), strings.TrimSpace(v))
	return nil
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("load "+name, flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, loadUsage)
		fs.PrintDefaults()
	}
	return fs
}

func loadHTTP(args []string) error {
	fs := newFlags("http")
	var o load.HTTPOptions
	hdr := headers{}
	fs.StringVar(&o.URL, "url", "", "the URL to load (http:// or https://)")
	fs.StringVar(&o.Proto, "proto", "h1", "h1, h2 (h2c over http://) or h3")
	fs.Float64Var(&o.Rate, "rate", 0, "requests per second, open loop (0: closed loop)")
	fs.DurationVar(&o.Duration, "d", 10*time.Second, "duration")
	fs.IntVar(&o.Conns, "c", 16, "connections")
	fs.IntVar(&o.Streams, "streams", 1, "h2/h3: concurrent requests per connection")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Second, "per request")
	fs.BoolVar(&o.Insecure, "k", false, "do not verify the server's certificate")
	fs.StringVar(&o.ServerName, "sni", "", "TLS server name (default: the URL's host)")
	fs.StringVar(&o.Host, "host", "", "Host header (default: the URL's)")
	fs.StringVar(&o.LocalAddr, "local", "", "bind the client's sockets to this IP (h3 on a locally routed prefix needs it)")
	fs.Var(hdr, "H", "an extra request header, Name: value (repeatable)")
	fs.Parse(args)
	if o.URL == "" {
		return fmt.Errorf("-url is required")
	}
	o.Header = http.Header(hdr)
	r, err := load.HTTP(context.Background(), o)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s, %s, %d connections × %d: %d requests in %.2f s, %.1f req/s, %d errors, %d unsent\n",
		o.Proto, o.URL, loop(o.Rate, "req/s"), o.Conns, max(o.Streams, 1), r.Requests, r.Duration.Seconds(), r.Rate, r.Errors, r.Unsent)
	if r.Redials > 0 {
		fmt.Printf("connections dialed again (closed by the server or GOAWAY): %d\n", r.Redials)
	}
	printLatency(r.Latency, r.FirstError)
	return nil
}

func loadTCPConn(args []string) error {
	fs := newFlags("tcpconn")
	var o load.TCPConnectOptions
	var request string
	fs.StringVar(&o.Addr, "addr", "", "host:port to connect to")
	fs.IntVar(&o.Conns, "c", 16, "workers, one connection at a time each")
	fs.Float64Var(&o.Rate, "rate", 0, "new connections per second, open loop (0: closed loop)")
	fs.DurationVar(&o.Duration, "d", 10*time.Second, "duration")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Second, "per connection")
	fs.StringVar(&request, "request", "", `bytes to send once connected, Go escapes allowed ("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")`)
	fs.IntVar(&o.Response, "response", 0, "bytes of answer to read (0: until the server closes, if -request is set)")
	fs.BoolVar(&o.Reset, "reset", false, "close with RST, leaving no TIME_WAIT")
	useTLS := fs.Bool("tls", false, "a TLS client on each connection: a full handshake each")
	insecure := fs.Bool("k", false, "with -tls: do not verify the server's certificate")
	sni := fs.String("sni", "", "with -tls: the server name (default: the host of -addr)")
	fs.StringVar(&o.LocalAddr, "local", "", "bind the client's sockets to this IP")
	fs.Parse(args)
	if o.Addr == "" {
		return fmt.Errorf("-addr is required")
	}
	if *useTLS {
		host, _, _ := net.SplitHostPort(o.Addr)
		o.TLS = &tls.Config{InsecureSkipVerify: *insecure, ServerName: cmp.Or(*sni, host)}
	}
	if request != "" {
		s, err := strconv.Unquote(`"` + strings.ReplaceAll(request, `"`, `\"`) + `"`)
		if err != nil {
			return fmt.Errorf("-request: %v", err)
		}
		o.Request = []byte(s)
	}
	r, err := load.TCPConnect(context.Background(), o)
	if err != nil {
		return err
	}
	fmt.Printf("tcpconn %s, %s, %d workers: %d connections in %.2f s, %.1f conn/s, %d errors, %d unsent\n",
		o.Addr, loop(o.Rate, "conn/s"), o.Conns, r.Conns, r.Duration.Seconds(), r.Rate, r.Errors, r.Unsent)
	printLatency(r.Latency, r.FirstError)
	return nil
}

func loadUDP(args []string) error {
	fs := newFlags("udp")
	var o load.UDPOptions
	fs.StringVar(&o.Addr, "addr", "", "host:port of a UDP echo service (or a proxy to one)")
	fs.IntVar(&o.Size, "size", 64, "datagram size, at least 16")
	fs.IntVar(&o.Inflight, "inflight", 1, "request-response: sockets, one request outstanding each")
	fs.Float64Var(&o.Rate, "rate", 0, "packet-rate mode: datagrams per second (0: request-response)")
	fs.IntVar(&o.Sockets, "sockets", 1, "packet-rate mode: sockets sending")
	fs.DurationVar(&o.Duration, "d", 10*time.Second, "duration")
	fs.DurationVar(&o.Timeout, "timeout", 0, "request-response: wait per reply (1s); packet rate: wait for late replies (200ms)")
	fs.StringVar(&o.LocalAddr, "local", "", "bind the sockets to this IP (needed on a locally routed prefix)")
	fs.Parse(args)
	if o.Addr == "" {
		return fmt.Errorf("-addr is required")
	}
	r, err := load.UDP(context.Background(), o)
	if err != nil {
		return err
	}
	mode := fmt.Sprintf("request-response, %d in flight", max(o.Inflight, 1))
	if o.Rate > 0 {
		mode = fmt.Sprintf("%.0f datagrams/s on %d sockets", o.Rate, max(o.Sockets, 1))
	}
	fmt.Printf("udp %s, %d bytes, %s: %d sent, %d replies in %.2f s, %.1f replies/s, loss %.3f%%, %d send errors\n",
		o.Addr, o.Size, mode, r.Sent, r.Received, r.Duration.Seconds(), r.Rate, r.Loss*100, r.SendErrors)
	printLatency(r.Latency, "")
	return nil
}

func loop(rate float64, unit string) string {
	if rate > 0 {
		return fmt.Sprintf("open loop at %g %s", rate, unit)
	}
	return "closed loop"
}

func printLatency(h *load.Histogram, firstErr string) {
	fmt.Printf("latency  %s  (%d samples)\n", h.Summary(), h.Count())
	if firstErr != "" {
		fmt.Printf("first error: %s\n", firstErr)
	}
}
