package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// buildEdgeproxy builds the binary under test.
func buildEdgeproxy(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "edgeproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/edgeproxy").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// BenchmarkCDNHTTP1 compares HTTP/1.1 keep-alive requests per second
// through nginx 1.22 as a reverse proxy, the spike (net/http with
// httputil.ReverseProxy) and edgeproxy's cdn, each on CPU 0 in turn, wrk and
// the origin (nginx) on CPU 1, rounds alternating. It reports medians, the
// ratios to nginx, and the CPU time per request of each.
func BenchmarkCDNHTTP1(b *testing.B) {
	netns.New(b)
	testutil.NeedTool(b, "taskset", "util-linux")
	nginx(b, 1, `server { listen 127.0.0.1:18100; location / { return 200 "hello from the origin\n"; } }`)
	// Access logs are off in both; BENCH_ACCESS_LOG=1 gives both a
	// buffered access log file, to measure what a log line costs.
	ngx := ""
	if os.Getenv("BENCH_ACCESS_LOG") == "1" {
		ngx = `access_log ` + filepath.Join(b.TempDir(), "nginx-access.log") + ` combined buffer=64k flush=100ms;`
	}
	nginxPID := nginx(b, 0, `upstream origin { server 127.0.0.1:18100; keepalive 256; }
  server { listen 127.0.0.1:18101; `+ngx+` location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } }`)
	self, _ := os.Executable()
	spike := onCPU(0, self)
	spike.Env = append(spike.Env, "BENCH_SPIKE_PROXY=127.0.0.1:18102", "BENCH_SPIKE_ORIGIN=http://127.0.0.1:18100")
	spikePID := started(b, spike).Process.Pid

	accessLog := `"off"`
	if os.Getenv("BENCH_ACCESS_LOG") == "1" {
		accessLog = filepath.Join(b.TempDir(), "edgeproxy-access.log")
	}
	cfg := filepath.Join(b.TempDir(), "edgeproxy.yaml")
	os.WriteFile(cfg, []byte(`admin: {listen: "127.0.0.1:19180"}
dispatch: {pin_dir: ""}
store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: cdn}]
cdn:
  http_ports: [80]
  https_ports: [443]
  http3: false
  access_log: `+accessLog+`
  sites: [{hosts: ["*"], origins: ["http://127.0.0.1:18100"]}]
`), 0o644)
	epPID := started(b, onCPU(0, buildEdgeproxy(b), "run", "--config", cfg)).Process.Pid
	for _, a := range []string{"127.0.0.1:18100", "127.0.0.1:18101", "127.0.0.1:18102", "127.0.0.1:19180", "192.0.2.1:80"} {
		waitTCP(b, a)
	}

	variants := []struct {
		name string
		pid  int
		url  string
	}{
		{"nginx", nginxPID, "http://127.0.0.1:18101/"},
		{"spike", spikePID, "http://127.0.0.1:18102/"},
		{"edgeproxy", epPID, "http://192.0.2.1/"},
	}
	rates, cpus := map[string][]float64{}, map[string][]float64{}
	for _, v := range variants { // warm up
		wrk(b, 1, v.url, 64, 2*time.Second)
	}
	b.ResetTimer()
	for range max(b.N, 5) {
		for _, v := range variants {
			before := cpuTicks(v.pid)
			rate, n := wrk(b, 1, v.url, 64, 4*time.Second)
			rates[v.name] = append(rates[v.name], rate)
			cpus[v.name] = append(cpus[v.name], float64(cpuTicks(v.pid)-before)/clockTick/float64(n)*1e6)
		}
	}
	b.StopTimer()
	for _, v := range variants {
		b.ReportMetric(median(rates[v.name]), v.name+"-req/s")
		b.ReportMetric(median(cpus[v.name]), v.name+"-cpu-µs/req")
	}
	b.ReportMetric(median(rates["spike"])/median(rates["nginx"]), "spike/nginx")
	b.ReportMetric(median(rates["edgeproxy"])/median(rates["nginx"]), "edgeproxy/nginx")
	b.ReportMetric(median(cpus["nginx"])/median(cpus["edgeproxy"]), "edgeproxy/nginx-cpu-efficiency")
}
