package bench

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// TestMain runs the spike's proxy when the benchmark re-executes this test
// binary with BENCH_SPIKE_PROXY set.
func TestMain(m *testing.M) {
	if addr := os.Getenv("BENCH_SPIKE_PROXY"); addr != "" {
		spikeProxy(addr, os.Getenv("BENCH_SPIKE_ORIGIN"))
		return
	}
	os.Exit(m.Run())
}

// spikeProxy is the spike: net/http's server and httputil.ReverseProxy with
// a keep-alive pool to one origin, nothing else.
func spikeProxy(addr, origin string) {
	u, err := url.Parse(origin)
	if err != nil {
		panic(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	srv := &http.Server{Addr: addr, Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	panic(srv.ListenAndServe())
}

// BenchmarkSpikeHTTP1: HTTP/1.1 keep-alive requests per second through
// nginx 1.22 as a reverse proxy against net/http with httputil.ReverseProxy,
// both on CPU 0 in turn, wrk and the origin (nginx) on CPU 1, rounds
// alternating. It reports the medians, the ratio, and the CPU time each
// proxy spent per request.
func BenchmarkSpikeHTTP1(b *testing.B) {
	netns.New(b)
	testutil.NeedTool(b, "taskset", "util-linux")
	nginx(b, 1, `server { listen 127.0.0.1:18100; location / { return 200 "hello from the origin\n"; } }`)
	nginxPID := nginx(b, 0, `upstream origin { server 127.0.0.1:18100; keepalive 256; }
  server { listen 127.0.0.1:18101; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } }`)
	self, _ := os.Executable()
	cmd := onCPU(0, self)
	cmd.Env = append(cmd.Env, "BENCH_SPIKE_PROXY=127.0.0.1:18102", "BENCH_SPIKE_ORIGIN=http://127.0.0.1:18100")
	goPID := started(b, cmd).Process.Pid
	for _, a := range []string{"127.0.0.1:18100", "127.0.0.1:18101", "127.0.0.1:18102"} {
		waitTCP(b, a)
	}
	run := func(pid int, url string) (rate, cpuPerReq float64) {
		before := cpuTicks(pid)
		rate, n := wrk(b, 1, url, 64, 5*time.Second)
		ticks := cpuTicks(pid) - before
		return rate, float64(ticks) / clockTick / float64(n) * 1e6
	}
	// Warm both up.
	run(nginxPID, "http://127.0.0.1:18101/")
	run(goPID, "http://127.0.0.1:18102/")
	var nr, gr, nc, gc []float64
	b.ResetTimer()
	for range max(b.N, 3) {
		r, c := run(nginxPID, "http://127.0.0.1:18101/")
		nr, nc = append(nr, r), append(nc, c)
		r, c = run(goPID, "http://127.0.0.1:18102/")
		gr, gc = append(gr, r), append(gc, c)
	}
	b.StopTimer()
	b.ReportMetric(median(nr), "nginx-req/s")
	b.ReportMetric(median(gr), "go-req/s")
	b.ReportMetric(median(gr)/median(nr), "go/nginx")
	b.ReportMetric(median(nc), "nginx-cpu-µs/req")
	b.ReportMetric(median(gc), "go-cpu-µs/req")
}
