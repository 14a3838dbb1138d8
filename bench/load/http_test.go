package load

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
	"github.com/quic-go/quic-go/http3"
)

func hello(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello\n")) }

func checkHTTP(t *testing.T, r *HTTPResult, err error, minReqs int) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests, %d errors, %d unsent, %.0f/s, %s", r.Requests, r.Errors, r.Unsent, r.Rate, r.Latency.Summary())
	if r.Errors != 0 || r.Requests < minReqs || r.Latency.Count() < int64(minReqs) || r.Rate <= 0 {
		t.Fatalf("result %+v (first error %q)", r, r.FirstError)
	}
}

func TestHTTP1ClosedAndOpen(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(hello))
	defer srv.Close()
	r, err := HTTP(context.Background(), HTTPOptions{URL: srv.URL, Duration: 300 * time.Millisecond, Conns: 4, LocalAddr: "127.0.0.1"})
	checkHTTP(t, r, err, 100)

	r, err = HTTP(context.Background(), HTTPOptions{URL: srv.URL, Rate: 500, Duration: 400 * time.Millisecond, Conns: 2})
	checkHTTP(t, r, err, 190)
	if r.Requests > 201 || r.Rate < 350 || r.Rate > 600 {
		t.Errorf("open loop at 500/s for 0.4 s: %d requests, %.0f/s", r.Requests, r.Rate)
	}
}

func TestHTTP1Errors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	r, err := HTTP(context.Background(), HTTPOptions{URL: srv.URL, Duration: 100 * time.Millisecond})
	if err == nil {
		t.Fatalf("want a warm-up error for a 404, got %+v", r)
	}
}

// A server that stalls once for 200 ms under an open loop of 100/s on one
// connection: the ~20 requests due during the stall are charged from their
// intended time, so p99 is ≥ 150 ms; a closed loop sees one slow request
// among thousands and a small p99.
func TestCoordinatedOmission(t *testing.T) {
	var stalled atomic.Bool
	start := time.Now()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if time.Since(start) > 300*time.Millisecond && !stalled.Swap(true) {
			time.Sleep(200 * time.Millisecond)
		}
		hello(w, r)
	}))
	defer srv.Close()
	r, err := HTTP(context.Background(), HTTPOptions{URL: srv.URL, Rate: 100, Duration: time.Second, Conns: 1})
	checkHTTP(t, r, err, 90)
	if p := r.Latency.Percentile(99); p < 150*time.Millisecond {
		t.Errorf("open loop p99 %v, want ≥ 150ms", p)
	}
	if p := r.Latency.Percentile(90); p < 50*time.Millisecond {
		t.Errorf("open loop p90 %v, want ≥ 50ms (≈ 20 of 100 requests delayed)", p)
	}

	stalled.Store(false)
	start = time.Now()
	r, err = HTTP(context.Background(), HTTPOptions{URL: srv.URL, Duration: time.Second, Conns: 1})
	checkHTTP(t, r, err, 500)
	if !stalled.Load() {
		t.Fatal("the server did not stall")
	}
	if p := r.Latency.Percentile(99); p > 50*time.Millisecond {
		t.Errorf("closed loop p99 %v, want small (coordinated omission hides the stall)", p)
	}
}

func TestHTTP2(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(hello))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	r, err := HTTP(context.Background(), HTTPOptions{URL: srv.URL, Proto: "h2", Insecure: true, Duration: 300 * time.Millisecond, Conns: 2, Streams: 8})
	checkHTTP(t, r, err, 100)

	// cleartext, prior knowledge
	h2cSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "want h2", http.StatusBadRequest)
			return
		}
		hello(w, r)
	}))
	h2cSrv.Config.Protocols = new(http.Protocols)
	h2cSrv.Config.Protocols.SetHTTP1(true)
	h2cSrv.Config.Protocols.SetUnencryptedHTTP2(true)
	h2cSrv.Start()
	defer h2cSrv.Close()
	r, err = HTTP(context.Background(), HTTPOptions{URL: h2cSrv.URL, Proto: "h2", Rate: 300, Duration: 300 * time.Millisecond, Conns: 1, Streams: 4})
	checkHTTP(t, r, err, 80)
}

func TestHTTP3(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, err := selfsigned.Write(dir, "h3", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http3.Server{Handler: http.HandlerFunc(hello), TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})}
	go srv.Serve(udp)
	defer srv.Close()
	url := "https://" + udp.LocalAddr().String() + "/"
	r, err := HTTP(context.Background(), HTTPOptions{URL: url, Proto: "h3", Insecure: true, LocalAddr: "127.0.0.1", Duration: 300 * time.Millisecond, Conns: 2, Streams: 4})
	checkHTTP(t, r, err, 50)
	r, err = HTTP(context.Background(), HTTPOptions{URL: url, Proto: "h3", Insecure: true, Rate: 200, Duration: 300 * time.Millisecond, Conns: 1, Streams: 4})
	checkHTTP(t, r, err, 50)
}

// shortLived closes every connection it accepts after life.
type shortLived struct {
	net.Listener
	life time.Duration
}

func (l shortLived) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		time.AfterFunc(l.life, func() { c.Close() })
	}
	return c, err
}

// A server that drops its connections now and then: the generators dial
// again and go on, with at most a few errors for the requests in flight.
func TestRedial(t *testing.T) {
	for _, proto := range []string{"h1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(hello))
			srv.Listener = shortLived{srv.Listener, 100 * time.Millisecond}
			srv.EnableHTTP2 = true
			srv.StartTLS()
			defer srv.Close()
			r, err := HTTP(context.Background(), HTTPOptions{URL: srv.URL, Proto: proto, Insecure: true, Rate: 1000, Duration: 500 * time.Millisecond, Conns: 2, Streams: 2})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d requests, %d errors (%s), %d redials", r.Requests, r.Errors, r.FirstError, r.Redials)
			if r.Requests < 100 || r.Errors > r.Requests/5 || (proto == "h2" && r.Redials < 2) {
				t.Fatalf("%+v", r)
			}
		})
	}
}
