package scenarios

// The l4 group: edgeproxy's L4 proxy (spectrum, apps on 203.0.113.0/24
// steered by its dispatcher) against HAProxy in TCP mode, nginx's stream
// module and the kernel alone ("direct": the same origin dialled without a
// proxy, a reference with no proxy CPU to count). Systems, origins and
// clients are in l4_fixture.go.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/bench/load"
)

func init() {
	harness.Register(harness.Scenario{Name: "l4-tcp-bulk", Group: "l4", Needs: []string{"nginx", "haproxy", "iperf3"}, Run: l4RunTCPBulk})
	harness.Register(harness.Scenario{Name: "l4-tcp-rr", Group: "l4", Needs: []string{"nginx", "haproxy"}, Run: l4RunTCPRR})
	harness.Register(harness.Scenario{Name: "l4-udp-rr", Group: "l4", Needs: []string{"nginx"}, Run: l4RunUDPRR})
	harness.Register(harness.Scenario{Name: "l4-udp-pps", Group: "l4", Needs: []string{"nginx"}, Run: l4RunUDPPPS})
}

// l4Start starts the origins a scenario names (through fn) and the
// systems, and records their versions.
func l4Start(c *harness.Ctx, r *harness.Result, systems []string, origins func(e *l4Env) error) (*l4Env, error) {
	e := newL4Env(c)
	if err := origins(e); err != nil {
		e.stop()
		return nil, err
	}
	for _, s := range systems {
		var err error
		switch s {
		case "edgeproxy":
			err = e.edgeproxy()
		case "haproxy":
			err = e.haproxy()
			r.Versions["haproxy"] = harness.Version("haproxy")
		case "nginx":
			err = e.nginx()
			r.Versions["nginx"] = harness.Version("nginx")
		}
		if err != nil {
			e.stop()
			return nil, err
		}
	}
	return e, nil
}

// cpuOf returns a function giving the CPU the system has used since now
// (zero for direct, which has no process of its own).
func (e *l4Env) cpuOf(system string) func() time.Duration {
	p := e.sut[system]
	if p == nil {
		return func() time.Duration { return 0 }
	}
	before := p.CPU()
	return func() time.Duration { return p.CPU() - before }
}

// minCPU is cpu for l4Enough, nil for direct (no CPU of its own to count).
func (e *l4Env) minCPU(system string, cpu func() time.Duration) func() time.Duration {
	if e.sut[system] == nil {
		return nil
	}
	return cpu
}

// l4-tcp-bulk: iperf3 through each proxy; CPU per GB and throughput.
func l4RunTCPBulk(c *harness.Ctx, r *harness.Result) error {
	systems := []string{"edgeproxy", "haproxy", "nginx", "direct", "ceiling"}
	d := 3 * time.Second
	r.Title = "TCP bulk through the L4 proxy (iperf3, one stream)"
	r.Unit = "GB"
	r.Primary, r.Secondary = harness.CPUPerGB, harness.Throughput
	r.Versions["iperf3"] = harness.Version("iperf3")
	if c.Mode.Tiny {
		r.Params["bytes"] = "256M"
	} else {
		r.Params["seconds"] = d.Seconds()
	}
	r.Notes = append(r.Notes, "direct: iperf3 to its server without a proxy, a reference: throughput only, no proxy CPU",
		"ceiling: an estimate of the most a proxy on CPU 0 could move, a reference: the load CPU's busy time per GB as the sender to a receiver on CPU 0 plus as the receiver from a sender on CPU 0 (what iperf3's client and server cost it behind a proxy that costs it nothing more), its inverse at 100% busy")
	e, err := l4Start(c, r, systems, func(e *l4Env) error { return e.iperf3Server() })
	if err != nil {
		return err
	}
	defer e.stop()
	target := map[string]string{
		"edgeproxy": l4Edge(l4SpecBulk),
		"haproxy":   l4Loopback(l4HAProxy),
		"nginx":     l4Loopback(l4Nginx),
		"direct":    l4Loopback(l4OriginBulk),
	}
	err = harness.Alternate(c, r, systems, func(sys string, round int) (map[string]float64, error) {
		if sys == "ceiling" {
			return l4BulkCeiling(c.Mode.Tiny, d)
		}
		cpu := e.cpuOf(sys)
		sut, _ := harness.ReadCPU(harness.SUTCPU)
		load, _ := harness.ReadCPU(harness.LoadCPU)
		var bytes, bits float64 // bits: Gbit/s × its bytes, for their mean
		err := l4Enough(e.minCPU(sys, cpu), func() error {
			b, g, err := l4Iperf3(c.Mode.Tiny, target[sys], d)
			bytes, bits = bytes+b, bits+g*b
			return err
		})
		if err != nil {
			return nil, err
		}
		_, sutBusy, sutSoftirq := sut.Since()
		loadShare, _, _ := load.Since()
		m := map[string]float64{harness.Throughput: bits / bytes, l4LoadBusy: 100 * loadShare}
		if sys != "direct" {
			m[harness.CPUPerGB] = cpu().Seconds() / (bytes / 1e9)
			m[l4SUTPerGB] = sutBusy / (bytes / 1e9)
			m[l4SUTSoftirqPerGB] = sutSoftirq / (bytes / 1e9)
		}
		return m, nil
	})
	if err == nil {
		r.Notes = append(r.Notes, l4BulkBound(r, systems))
	}
	return err
}

// l4BulkCeiling measures what the load CPU spends per GB at each end of a
// proxied transfer when the proxy adds nothing: iperf3's client there
// sending to a server on the SUT CPU, and its server there receiving from a
// client on the SUT CPU. A proxy in between makes the load CPU do both, so
// 1/(sum) at 100% busy estimates the most any proxy could move here (an
// estimate: a proxy that woke the load CPU less than iperf3 does could
// pass it).
func l4BulkCeiling(tiny bool, d time.Duration) (map[string]float64, error) {
	var perGB [2]float64
	for i, run := range []struct {
		client int
		addr   string
	}{{harness.LoadCPU, l4Loopback(l4BulkSink)}, {harness.SUTCPU, l4Loopback(l4OriginBulk)}} {
		load, err := harness.ReadCPU(harness.LoadCPU)
		if err != nil {
			return nil, err
		}
		bytes, _, err := l4Iperf3On(run.client, tiny, run.addr, d)
		if err != nil {
			return nil, err
		}
		_, busy, _ := load.Since()
		perGB[i] = busy / (bytes / 1e9)
	}
	if perGB[0]+perGB[1] <= 0 {
		return nil, fmt.Errorf("ceiling: no load CPU time counted (%v)", perGB)
	}
	return map[string]float64{
		harness.Throughput: 8 / (perGB[0] + perGB[1]),
		l4SendPerGB:        perGB[0],
		l4RecvPerGB:        perGB[1],
	}, nil
}

// The ceiling's parts: the load CPU's busy time per GB as the sender and
// as the receiver.
const (
	l4SendPerGB = "load_send_s_per_gb"
	l4RecvPerGB = "load_recv_s_per_gb"
)

// The bulk scenario's account of where the time went, per round: the load
// CPU's busy share, and the system-under-test CPU's busy time per GB with
// the kernel's softirq work, which no process is charged for (cpu_s_per_gb
// is the process's own time only).
const (
	l4LoadBusy        = "load_cpu_busy_pct"
	l4SUTPerGB        = "sut_cpu_s_per_gb"
	l4SUTSoftirqPerGB = "sut_softirq_s_per_gb"
)

// l4BulkBound says, from the rounds' medians, how busy the load CPU was
// under each system: where it is all but saturated, the throughput is the
// generator's and the origin's limit (they share that CPU) more than the
// proxy's, and the proxy's cost is better read from its CPU per GB. It ends
// with the ceiling that bounds any proxy.
func l4BulkBound(r *harness.Result, systems []string) string {
	var parts []string
	for _, sys := range systems {
		busy, ok := r.MedianOf(sys, l4LoadBusy)
		if !ok {
			continue
		}
		p := fmt.Sprintf("%s %.0f%%", sys, busy)
		if sut, ok := r.MedianOf(sys, l4SUTPerGB); ok {
			p += fmt.Sprintf(" (CPU %d busy %.2f s per GB, softirq included)", harness.SUTCPU, sut)
		}
		parts = append(parts, p)
	}
	note := "load CPU busy, medians of the rounds: " + strings.Join(parts, ", ") +
		"; at 95% or more the generator and the origin, which share that CPU, bound the throughput more than the proxy does"
	if g, ok := r.MedianOf("ceiling", harness.Throughput); ok {
		send, _ := r.MedianOf("ceiling", l4SendPerGB)
		recv, _ := r.MedianOf("ceiling", l4RecvPerGB)
		note += fmt.Sprintf("; ceiling %.1f Gbit/s (the load CPU's %.3f s per GB as the sender and %.3f as the receiver)", g, send, recv)
	}
	return note
}

// l4-tcp-rr: 64-byte messages echoed back to back on 8 connections.
func l4RunTCPRR(c *harness.Ctx, r *harness.Result) error {
	systems := []string{"edgeproxy", "haproxy", "nginx", "direct"}
	const conns, size = 8, 64
	d := c.Mode.D(2 * time.Second)
	r.Title = "TCP 64-byte round trips (8 connections, closed loop)"
	r.Unit = "round trip"
	r.Primary, r.Secondary = harness.CPUPerUnit, harness.Rate
	r.Params["connections"], r.Params["bytes"], r.Params["seconds"] = conns, size, d.Seconds()
	r.Notes = append(r.Notes, "client and echo origin: goroutines of the harness, pinned to the load CPU while a round runs",
		"latencies: of a closed loop, from each message's write to its echo's last byte",
		"direct: the echo origin without a proxy, a reference: no proxy CPU")
	e, err := l4Start(c, r, systems, func(e *l4Env) error { return e.tcpEcho(l4Loopback(l4OriginRR)) })
	if err != nil {
		return err
	}
	defer e.stop()
	target := map[string]string{
		"edgeproxy": l4Edge(l4SpecRR),
		"haproxy":   l4Loopback(l4HAProxy + 1),
		"nginx":     l4Loopback(l4Nginx + 1),
		"direct":    l4Loopback(l4OriginRR),
	}
	return harness.Alternate(c, r, systems, func(sys string, round int) (map[string]float64, error) {
		defer l4PinSelf(harness.LoadCPU)()
		cpu := e.cpuOf(sys)
		var n int64
		var el time.Duration
		h := load.NewHistogram()
		err := l4Enough(e.minCPU(sys, cpu), func() error {
			n1, el1, h1, err := l4TcpRR(target[sys], conns, size, d)
			if err == nil {
				n, el = n+n1, el+el1
				h.Merge(h1)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		m := map[string]float64{
			harness.Rate: float64(n) / el.Seconds(),
			harness.P50:  l4MS(h.Percentile(50)),
			harness.P99:  l4MS(h.Percentile(99)),
			harness.P999: l4MS(h.Percentile(99.9)),
		}
		if sys != "direct" {
			m[harness.CPUPerUnit] = float64(cpu().Microseconds()) / float64(n)
		}
		return m, nil
	})
}

var l4UdpTarget = map[string]string{
	"edgeproxy": l4Edge(l4SpecUDP),
	"nginx":     l4Loopback(l4Nginx + 2),
	"direct":    l4Loopback(l4OriginUDP),
}

// l4-udp-rr: 64-byte datagrams echoed on 32 flows, one in flight each.
func l4RunUDPRR(c *harness.Ctx, r *harness.Result) error {
	systems := []string{"edgeproxy", "nginx", "direct"}
	const flows, size = 32, 64
	d := c.Mode.D(2 * time.Second)
	r.Title = "UDP 64-byte request-response (32 flows, one in flight each)"
	r.Unit = "round trip"
	r.Primary, r.Secondary = harness.CPUPerUnit, harness.Rate
	r.Params["flows"], r.Params["bytes"], r.Params["seconds"] = flows, size, d.Seconds()
	r.Notes = append(r.Notes, "client (bench/load's UDP) and echo origin: goroutines of the harness, pinned to the load CPU while a round runs",
		"direct: the echo origin without a proxy, a reference: no proxy CPU")
	e, err := l4Start(c, r, systems, func(e *l4Env) error { return e.udpEcho(l4Loopback(l4OriginUDP)) })
	if err != nil {
		return err
	}
	defer e.stop()
	ns, err := newNSDialer() // the generator's sockets, in the scenario's namespace
	if err != nil {
		return err
	}
	defer ns.close()
	return harness.Alternate(c, r, systems, func(sys string, round int) (map[string]float64, error) {
		defer l4PinSelf(harness.LoadCPU)()
		cpu := e.cpuOf(sys)
		var got, lost int
		var el time.Duration
		h := load.NewHistogram()
		err := l4Enough(e.minCPU(sys, cpu), func() error {
			res, err := load.UDP(context.Background(), load.UDPOptions{Addr: l4UdpTarget[sys], LocalAddr: "127.0.0.1",
				Size: size, Inflight: flows, Duration: d, Timeout: 200 * time.Millisecond, Dial: ns.Dial})
			if err != nil {
				return err
			}
			if res.Received == 0 {
				return fmt.Errorf("udp round trips to %s: no answer", l4UdpTarget[sys])
			}
			got, lost, el = got+res.Received, lost+res.Lost, el+res.Duration
			h.Merge(res.Latency)
			return nil
		})
		if err != nil {
			return nil, err
		}
		m := map[string]float64{
			harness.Rate:   float64(got) / el.Seconds(),
			harness.P50:    l4MS(h.Percentile(50)),
			harness.P99:    l4MS(h.Percentile(99)),
			harness.P999:   l4MS(h.Percentile(99.9)),
			harness.Failed: float64(lost),
		}
		if sys != "direct" {
			m[harness.CPUPerUnit] = float64(cpu().Microseconds()) / float64(got)
		}
		return m, nil
	})
}

// l4-udp-pps: the highest offered rate of 64-byte datagrams (echoed) with
// less than 1% loss, searched in a few steps: doubling from the rate the
// system held in its previous round until one loses, then halving the
// interval between the best held and the lowest lost (and halving on, a
// few steps more, while nothing held).
func l4RunUDPPPS(c *harness.Ctx, r *harness.Result) error {
	systems := []string{"edgeproxy", "nginx", "direct"}
	const flows, size, maxLoss = 4, 64, 1.0 // flows: sockets the rate is spread over
	steps := c.Mode.N(6, 3)
	step := c.Mode.D(500 * time.Millisecond)
	start := float64(c.Mode.N(50_000, 10_000))
	r.Title = "UDP 64-byte packet rate at < 1% loss (echoed)"
	r.Unit = "datagram"
	r.Primary, r.Secondary = harness.Rate, harness.CPUPerUnit
	r.Params["flows"], r.Params["bytes"], r.Params["steps"], r.Params["step_seconds"], r.Params["max_loss_pct"] = flows, size, steps, step.Seconds(), maxLoss
	r.Notes = append(r.Notes, "rate: datagrams per second offered (and echoed) at the highest rate found with < 1% loss; cpu_us: per datagram answered at that rate; p50/p99: from the intended send time, at that rate",
		"sender and receivers (bench/load's UDP packet-rate mode), echo origin and echo origin: goroutines of the harness, pinned to the load CPU while a round runs",
		"direct is no upper bound: without a proxy the load CPU also does the loopback deliveries a proxy's sends do on the proxy's CPU")
	e, err := l4Start(c, r, systems, func(e *l4Env) error { return e.udpEcho(l4Loopback(l4OriginUDP)) })
	if err != nil {
		return err
	}
	defer e.stop()
	ns, err := newNSDialer() // the generator's sockets, in the scenario's namespace
	if err != nil {
		return err
	}
	defer ns.close()
	held := map[string]float64{}
	return harness.Alternate(c, r, systems, func(sys string, round int) (map[string]float64, error) {
		defer l4PinSelf(harness.LoadCPU)()
		rate := start
		if h := held[sys]; h > 0 {
			rate = h
		}
		var best map[string]float64
		good, bad := 0.0, 0.0
		// Nothing held yet after the steps (a noisy machine): go on halving,
		// a few steps more.
		for i := 0; i < steps || (best == nil && i < steps+4); i++ {
			cpu := e.cpuOf(sys)
			res, err := load.UDP(context.Background(), load.UDPOptions{Addr: l4UdpTarget[sys], LocalAddr: "127.0.0.1",
				Size: size, Rate: rate, Sockets: flows, Duration: step, Timeout: 100 * time.Millisecond, Dial: ns.Dial})
			if err != nil {
				return nil, err
			}
			loss := 100 * res.Loss
			c.Log("%s: %s offered %.0f/s, loss %.2f%%", r.Scenario, sys, rate, loss)
			if loss < maxLoss && res.Received > 0 {
				good = rate
				best = map[string]float64{harness.Rate: float64(res.Sent) / res.Duration.Seconds(), harness.LossPct: loss,
					harness.P50: l4MS(res.Latency.Percentile(50)), harness.P99: l4MS(res.Latency.Percentile(99))}
				if sys != "direct" {
					best[harness.CPUPerUnit] = float64(cpu().Microseconds()) / float64(res.Received)
				}
			} else {
				bad = rate
			}
			switch {
			case bad == 0:
				rate *= 2
			case good == 0:
				rate /= 2
			default:
				rate = (good + bad) / 2
			}
		}
		if best == nil {
			return nil, fmt.Errorf("no rate held with < %.0f%% loss (lowest tried %.0f/s)", maxLoss, bad)
		}
		held[sys] = good
		return best, nil
	})
}
