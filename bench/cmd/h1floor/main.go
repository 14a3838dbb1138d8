// Command h1floor is the floor of an HTTP/1.1 keep-alive proxy in Go: a
// goroutine per client connection, Go's network poller, one origin
// connection each, and no HTTP work beyond finding the end of a head and
// the origin's Content-Length. It forwards every request as a fixed GET.
// Measured beside edgeproxy and nginx under the same load, it tells how
// much of edgeproxy's CPU per request the runtime and the kernel take, and
// how much its HTTP layers do (docs/cdn.md).
//
//	h1floor -listen 192.0.2.1:80 -origin 127.0.0.1:18100
//
// Not a proxy: it ignores the request's method, target and headers.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"log"
	"net"
	"strconv"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve")
	origin := flag.String("origin", "127.0.0.1:18100", "origin to forward to")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Print(err)
			continue
		}
		go relay(c, *origin)
	}
}

var request = []byte("GET / HTTP/1.1\r\nHost: origin\r\n\r\n")

// relay serves one client connection over one origin connection.
func relay(c net.Conn, origin string) {
	defer c.Close()
	o, err := net.Dial("tcp", origin)
	if err != nil {
		return
	}
	defer o.Close()
	cr, or := bufio.NewReaderSize(c, 4096), bufio.NewReaderSize(o, 4096)
	out := make([]byte, 0, 4096)
	for {
		if skipHead(cr) != nil {
			return
		}
		if _, err := o.Write(request); err != nil {
			return
		}
		// The origin's head, then its body, into one write to the client.
		out = out[:0]
		length := 0
		for {
			line, err := or.ReadSlice('\n')
			if err != nil {
				return
			}
			out = append(out, line...)
			if len(line) <= 2 {
				break
			}
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		head := len(out)
		out = append(out, make([]byte, length)...)
		if _, err := io.ReadFull(or, out[head:]); err != nil {
			return
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// skipHead reads a request head up to its empty line.
func skipHead(r *bufio.Reader) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
		}
	}
}
