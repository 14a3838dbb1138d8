package testutil

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"time"
)

// pollEvery is how often WaitFor tries again.
const pollEvery = 20 * time.Millisecond

// WaitFor calls try until it returns nil or timeout has passed, and returns
// try's last error: nil once it succeeded.
func WaitFor(timeout time.Duration, try func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := try()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollEvery)
	}
}

// Accepts returns nil when something accepts a TCP connection on addr.
func Accepts(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// Answers returns nil when a GET of url through hc answers with status
// want, or with any status if want is 0.
func Answers(hc *http.Client, url string, want int) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if want != 0 && resp.StatusCode != want {
		return fmt.Errorf("GET %s: %s, want %d", url, resp.Status, want)
	}
	return nil
}

// AskUDP sends msg on the connected UDP socket c and waits each for a line
// of answer, up to tries times (a datagram may be lost, or go to an origin
// that fails first). It returns the first line read, or "" when none came.
func AskUDP(c net.Conn, msg string, tries int, each time.Duration) string {
	for range tries {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(each))
		if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			return line
		}
	}
	return ""
}
