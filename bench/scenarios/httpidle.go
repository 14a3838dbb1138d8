package scenarios

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"
)

// openIdle opens n connections to addr (TLS 1.3 when useTLS), makes
// the given number of GET requests on each, reading the answers, and
// returns them open. They are dialled on the calling goroutine (a test's
// namespace belongs to its thread), in batches whose handshakes and
// requests then run on 64 goroutines: a connection accepted long before
// its handshake would meet the proxy's request-head timeout.
func openIdle(addr string, useTLS bool, n, requests int) ([]net.Conn, error) {
	const batch, workers = 256, 64
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "bench.example", MinVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"}}
	conns := make([]net.Conn, 0, n)
	for len(conns) < n {
		first := len(conns)
		for len(conns) < min(n, first+batch) {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return conns, fmt.Errorf("dial %s (%d open): %w", addr, len(conns), err)
			}
			conns = append(conns, c)
		}
		next := make(chan int)
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					if useTLS {
						conns[i] = tls.Client(conns[i], cfg)
					}
					if err := requestOn(conns[i], requests); err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("%s, connection %d: %w", addr, i, err)
						}
						mu.Unlock()
					}
				}
			}()
		}
		for i := first; i < len(conns); i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		if firstErr != nil {
			return conns, firstErr
		}
	}
	return conns, nil
}

// requestOn makes count keep-alive GET requests on c.
func requestOn(c net.Conn, count int) error {
	defer c.SetDeadline(time.Time{})
	br := bufio.NewReaderSize(c, 1024)
	for range count {
		if err := chgExchange(c, br, chgGet); err != nil {
			return err
		}
	}
	return nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}
