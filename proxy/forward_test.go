package proxy

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// TestRetryBudget: retries are a share of requests, plus a floor per second.
func TestRetryBudget(t *testing.T) {
	b := newRetryBudget(Retries{Budget: 0.1, MinPerSecond: 1})
	now := time.Unix(0, b.last.Load())
	spent := 0
	for b.withdraw(now) {
		spent++
	}
	if spent != 10 {
		t.Errorf("a fresh budget allows %d retries, want 10", spent)
	}
	for range 100 {
		b.deposit()
	}
	spent = 0
	for b.withdraw(now) {
		spent++
	}
	if spent != 10 {
		t.Errorf("100 requests at 0.1 allow %d retries, want 10", spent)
	}
	if !b.withdraw(now.Add(1100*time.Millisecond)) || b.withdraw(now.Add(1100*time.Millisecond)) {
		t.Error("the floor of one per second does not hold")
	}
	var wg sync.WaitGroup // concurrent use keeps the count
	b = newRetryBudget(Retries{Budget: 1, MinPerSecond: 1})
	now = time.Unix(0, b.last.Load())
	var mu sync.Mutex
	spent = 0
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				b.deposit()
				if b.withdraw(now) {
					mu.Lock()
					spent++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for b.withdraw(now) {
		spent++
	}
	if spent != 8000+10 {
		t.Errorf("8000 requests at 1.0 plus 10 saved: %d retries", spent)
	}
}

// TestRetryable: what may be sent again.
func TestRetryable(t *testing.T) {
	req := func(method string, cl int) *fasthttp.Request {
		r := &fasthttp.Request{}
		r.Header.SetMethod(method)
		r.Header.SetContentLength(cl)
		if cl == -2 {
			r.Header.SetContentLength(-2)
		}
		return r
	}
	none := func() int64 { return 0 }
	some := func() int64 { return 5 }
	for _, tc := range []struct {
		name string
		err  error
		req  *fasthttp.Request
		body func() int64
		want bool
	}{
		{"dial, GET", &dialError{errors.New("refused")}, req("GET", -2), nil, true},
		{"dial, POST, body unread", &dialError{errors.New("refused")}, req("POST", 7), none, true},
		{"dial, POST, body read", &dialError{errors.New("refused")}, req("POST", 7), some, false},
		{"closed, GET", fasthttp.ErrConnectionClosed, req("GET", -2), nil, true},
		{"closed, POST", fasthttp.ErrConnectionClosed, req("POST", 7), none, false},
		{"closed, PUT with a body", fasthttp.ErrConnectionClosed, req("PUT", 7), none, false},
		{"closed, DELETE", fasthttp.ErrConnectionClosed, req("DELETE", -2), nil, true},
		{"timeout, GET", fasthttp.ErrTimeout, req("GET", -2), nil, false},
		{"h2 refused, POST, body unread", fmt.Errorf("round trip: %w", http2.StreamError{StreamID: 1, Code: http2.ErrCodeRefusedStream}), req("POST", 7), none, true},
		{"h2 reset, GET", http2.StreamError{StreamID: 1, Code: http2.ErrCodeInternal}, req("GET", -2), nil, false},
		{"h2 timeout, GET", errH2Timeout, req("GET", -2), nil, false},
		{"other, GET", errors.New("malformed response"), req("GET", -2), nil, false},
	} {
		if got := retryable(tc.err, tc.req, tc.body); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
