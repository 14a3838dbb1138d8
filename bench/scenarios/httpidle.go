package scenarios

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// openIdle opens n connections to addr (TLS 1.3 when useTLS), makes
// the given number of GET requests on each, reading the answers, and
// returns them open. The connections are dialled on the calling goroutine (a test's
// namespace belongs to its thread); the handshakes and requests run on 64
// goroutines.
func openIdle(addr string, useTLS bool, n, requests int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return conns, fmt.Errorf("dial %s (%d open): %w", addr, len(conns), err)
		}
		conns = append(conns, c)
	}
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "bench.example", MinVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"}}
	next := make(chan int)
	errc := make(chan error, 64)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if useTLS {
					tc := tls.Client(conns[i], cfg)
					conns[i] = tc
				}
				if err := requestOn(conns[i], requests); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range conns {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		return conns, fmt.Errorf("%s: %w", addr, err)
	default:
		return conns, nil
	}
}

// requestOn makes count keep-alive GET requests on c.
func requestOn(c net.Conn, count int) error {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	br := bufio.NewReaderSize(c, 1024)
	for range count {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench.example\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	return nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}
