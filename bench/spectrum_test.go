package bench

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// pinned returns a command pinned to CPU 0 with GOMAXPROCS=1: the system
// under test. The benchmark itself (load generator and origin) should run
// on CPU 1 (make bench runs it under taskset -c 1).
func pinned(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("taskset", append([]string{"-c", "0", name}, args...)...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	return cmd
}

// sink accepts connections, reads each to EOF, then answers one byte.
func sink(b *testing.B, addr string) net.Listener {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
				c.Write([]byte{1})
			}()
		}
	}()
	return ln
}

// push sends n bytes to dst, half-closes, waits for the sink's byte, and
// returns the throughput in Gbit/s.
func push(b *testing.B, dst string, n int64) float64 {
	c, err := net.Dial("tcp", dst)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.CopyN(c, zeros{}, n); err != nil {
		b.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		b.Fatal(err)
	}
	return float64(n*8) / time.Since(start).Seconds() / 1e9
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// BenchmarkSpectrumTCPThroughput compares bulk TCP throughput through
// spectrum (the edgeproxy binary on CPU 0) against a direct connection to
// the origin and against haproxy 2.6 in TCP mode (also on CPU 0), in the
// same run, rounds alternating. It reports medians and ratios.
func BenchmarkSpectrumTCPThroughput(b *testing.B) {
	netns.New(b)
	haproxy := testutil.NeedTool(b, "haproxy", "haproxy")
	testutil.NeedTool(b, "taskset", "util-linux")
	ln := sink(b, "127.0.0.1:19000")
	defer ln.Close()

	epCfg := testutil.WriteConfig(b, `admin: {listen: "127.0.0.1:9180"}
dispatch: {pin_dir: ""}
store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
spectrum:
  apps: [{name: bulk, protocol: tcp, edge: 192.0.2.0/24, ports: "5000", origins: ["127.0.0.1:19000"]}]
`)
	ep := pinned(buildEdgeproxy(b), "run", "--config", epCfg)
	var epLog bytes.Buffer
	ep.Stderr = &epLog
	if err := ep.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { ep.Process.Kill(); ep.Wait() }()

	hpCfg := filepath.Join(b.TempDir(), "haproxy.cfg")
	os.WriteFile(hpCfg, []byte(`global
  nbthread 1
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen bulk
  bind 127.0.0.1:19001
  server origin 127.0.0.1:19000
`), 0o600)
	hp := pinned(haproxy, "-f", hpCfg, "-db")
	if err := hp.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { hp.Process.Kill(); hp.Wait() }()
	waitTCP(b, "127.0.0.1:19001")
	waitTCP(b, "127.0.0.1:9180")

	const size = 1 << 30
	variants := []struct{ name, dst string }{
		{"direct", "127.0.0.1:19000"},
		{"spectrum", "192.0.2.1:5000"},
		{"haproxy", "127.0.0.1:19001"},
	}
	results := map[string][]float64{}
	b.ResetTimer()
	for range max(b.N, 5) {
		for _, v := range variants {
			results[v.name] = append(results[v.name], push(b, v.dst, size))
		}
	}
	b.StopTimer()
	d, s, h := medianOf(results["direct"]), medianOf(results["spectrum"]), medianOf(results["haproxy"])
	b.ReportMetric(d, "direct-Gbit/s")
	b.ReportMetric(s, "spectrum-Gbit/s")
	b.ReportMetric(h, "haproxy-Gbit/s")
	b.ReportMetric(s/d, "spectrum/direct")
	b.ReportMetric(s/h, "spectrum/haproxy")
}

func medianOf(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

// BenchmarkSpectrumUDPRate compares UDP request-response rates through
// spectrum (the binary on CPU 0) against the origin directly: a client keeps
// 32 datagrams in flight to an echo origin and counts answers per second.
func BenchmarkSpectrumUDPRate(b *testing.B) {
	netns.New(b)
	testutil.NeedTool(b, "taskset", "util-linux")
	origin, err := net.ListenPacket("udp", "127.0.0.1:19002")
	if err != nil {
		b.Fatal(err)
	}
	defer origin.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := origin.ReadFrom(buf)
			if err != nil {
				return
			}
			origin.WriteTo(buf[:n], from)
		}
	}()
	epCfg := testutil.WriteConfig(b, `admin: {listen: "127.0.0.1:9180"}
dispatch: {pin_dir: ""}
store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
spectrum:
  apps: [{name: echo, protocol: udp, edge: 192.0.2.0/24, ports: "5001", origins: ["127.0.0.1:19002"]}]
`)
	ep := pinned(buildEdgeproxy(b), "run", "--config", epCfg)
	if err := ep.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { ep.Process.Kill(); ep.Wait() }()
	waitTCP(b, "127.0.0.1:9180")

	rate := func(dst string) float64 {
		c, err := net.Dial("udp", dst)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		payload := make([]byte, 64)
		const window, total = 32, 100_000
		for range window {
			c.Write(payload)
		}
		buf := make([]byte, 2048)
		start := time.Now()
		got := 0
		for got < total {
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.Read(buf); err != nil {
				c.Write(payload) // a loss: keep the window full
				continue
			}
			got++
			c.Write(payload)
		}
		return float64(got) / time.Since(start).Seconds()
	}
	results := map[string][]float64{}
	b.ResetTimer()
	for range max(b.N, 5) {
		results["direct"] = append(results["direct"], rate("127.0.0.1:19002"))
		results["spectrum"] = append(results["spectrum"], rate("192.0.2.1:5001"))
	}
	b.StopTimer()
	d, s := medianOf(results["direct"]), medianOf(results["spectrum"])
	b.ReportMetric(d, "direct-pps")
	b.ReportMetric(s, "spectrum-pps")
	b.ReportMetric(s/d, "spectrum/direct")
}
