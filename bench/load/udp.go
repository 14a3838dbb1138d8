package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// UDPOptions configures UDP. The server must echo each datagram's first 16
// bytes back (an echo server, or a proxy in front of one): they carry a
// sequence number and the send time, which match replies to requests.
type UDPOptions struct {
	Addr string // host:port
	// LocalAddr binds the sockets to this IP: needed when Addr is on a
	// locally routed prefix, where an unbound socket's replies are steered.
	LocalAddr string
	Size      int // datagram size, default 64, at least 16

	// Request-response mode (Rate 0): Inflight sockets (default 1), each
	// with one request outstanding, the next sent as soon as its reply
	// arrives or Timeout passes (counted lost).
	Inflight int
	// Packet-rate mode (Rate > 0): Sockets sockets (default 1) send Rate
	// datagrams per second together at fixed intervals, replies are counted
	// as they come, and the loss is what had not come back Timeout after
	// the last send.
	Rate    float64
	Sockets int

	Duration time.Duration // default 10 s
	Timeout  time.Duration // rr: per reply, default 1 s; rate: the wait for late replies, default 200 ms

	// Dial, if set, makes each socket with d (bound to LocalAddr), e.g.
	// inside a network namespace. Nil: d.DialContext.
	Dial func(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error)
}

// UDPResult is what UDP measured: datagrams Sent, matching replies
// Received, Lost = Sent − Received, Loss = Lost/Sent (a fraction, 0.01 is
// 1%), SendErrors (e.g. ICMP port unreachable reported on the socket),
// Latency of the replies from their send time (intended send time in
// packet-rate mode), Rate replies per second of Duration.
type UDPResult struct {
	Sent, Received, Lost int
	Loss                 float64
	SendErrors           int
	Duration             time.Duration
	Latency              *Histogram
	Rate                 float64
}

var errLost = errors.New("load: no reply in time")

// UDP runs a UDP request-response or packet-rate load.
func UDP(ctx context.Context, o UDPOptions) (*UDPResult, error) {
	if o.Size == 0 {
		o.Size = 64
	}
	if o.Size < 16 {
		return nil, fmt.Errorf("load: UDP size %d: at least 16 bytes", o.Size)
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	raddr, err := net.ResolveUDPAddr("udp", o.Addr)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{}
	if o.LocalAddr != "" {
		ip := net.ParseIP(o.LocalAddr)
		if ip == nil {
			return nil, fmt.Errorf("load: local address %q is not an IP", o.LocalAddr)
		}
		d.LocalAddr = &net.UDPAddr{IP: ip}
	}
	dial := o.Dial
	if dial == nil {
		dial = func(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
			return d.DialContext(ctx, network, address)
		}
	}
	n := max(o.Inflight, 1)
	if o.Rate > 0 {
		n = max(o.Sockets, 1)
	}
	var conns []*net.UDPConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := dial(ctx, d, "udp", raddr.String())
		if err != nil {
			return nil, err
		}
		conns = append(conns, c.(*net.UDPConn))
	}
	if o.Rate > 0 {
		if o.Timeout <= 0 {
			o.Timeout = 200 * time.Millisecond
		}
		return udpRate(ctx, o, conns)
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	return udpRR(ctx, o, conns)
}

func udpRR(ctx context.Context, o UDPOptions, conns []*net.UDPConn) (*UDPResult, error) {
	var seq atomic.Uint64
	var sendErrs atomic.Int64
	out := make([][]byte, len(conns))
	in := make([][]byte, len(conns))
	for i := range conns {
		out[i], in[i] = make([]byte, o.Size), make([]byte, o.Size+64)
	}
	do := func(ctx context.Context, w int) error {
		c, b, r := conns[w], out[w], in[w]
		id := seq.Add(1)
		binary.LittleEndian.PutUint64(b, id)
		if _, err := c.Write(b); err != nil {
			sendErrs.Add(1)
			return err
		}
		c.SetReadDeadline(time.Now().Add(o.Timeout))
		for {
			m, err := c.Read(r)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return errLost
			}
			if err != nil {
				// ECONNREFUSED from an earlier datagram's ICMP: the request is lost
				sendErrs.Add(1)
				return err
			}
			if m >= 8 && binary.LittleEndian.Uint64(r) == id {
				return nil
			}
			// a late reply to an earlier request: keep waiting for ours
		}
	}
	s := newSchedule(ctx, 0, o.Duration)
	total, elapsed, _ := drive(ctx, s, len(conns), do)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &UDPResult{
		Sent: total.requests, Received: total.requests - total.errors, Lost: total.errors,
		SendErrors: int(sendErrs.Load()), Duration: elapsed, Latency: total.hist,
	}
	r.finish()
	return r, nil
}

func (r *UDPResult) finish() {
	if r.Sent > 0 {
		r.Loss = float64(r.Lost) / float64(r.Sent)
	}
	if r.Duration > 0 {
		r.Rate = float64(r.Received) / r.Duration.Seconds()
	}
}

func udpRate(ctx context.Context, o UDPOptions, conns []*net.UDPConn) (*UDPResult, error) {
	start := time.Now()
	interval := 1e9 / o.Rate
	planned := int64(float64(o.Duration) / interval)

	// receivers: one per socket, each with its own histogram
	hists := make([]*Histogram, len(conns))
	received := make([]int, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		hists[i] = NewHistogram()
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, o.Size+64)
			for {
				m, err := c.Read(b)
				if err != nil {
					if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
						return
					}
					continue // ECONNREFUSED and the like: keep reading
				}
				if m < 16 || int64(binary.LittleEndian.Uint64(b)) >= planned {
					continue
				}
				sent := time.Duration(binary.LittleEndian.Uint64(b[8:]))
				hists[i].Record(time.Since(start) - sent)
				received[i]++
			}
		}()
	}

	// the sender, on a thread of its own for precise sleeps (see schedule):
	// every datagram due by now, round robin over the sockets, stamped with
	// its intended time
	sendErrs := 0
	var next int64
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		defer twoProcs()()
		preciseThread()
		b := make([]byte, o.Size)
		for next < planned && ctx.Err() == nil {
			due := min(int64(float64(time.Since(start))/interval)+1, planned)
			for ; next < due; next++ {
				binary.LittleEndian.PutUint64(b, uint64(next))
				binary.LittleEndian.PutUint64(b[8:], uint64(time.Duration(float64(next)*interval)))
				if _, err := conns[next%int64(len(conns))].Write(b); err != nil {
					sendErrs++
				}
			}
			if next < planned {
				sleepUntil(start.Add(time.Duration(float64(next) * interval)))
			}
		}
	}()
	<-sent
	sendEnd := time.Now()
	// wait for late replies, then stop the receivers
	for _, c := range conns {
		c.SetReadDeadline(sendEnd.Add(o.Timeout))
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &UDPResult{Sent: int(next), SendErrors: sendErrs, Duration: sendEnd.Sub(start), Latency: NewHistogram()}
	for i := range conns {
		r.Latency.Merge(hists[i])
		r.Received += received[i]
	}
	r.Received = min(r.Received, r.Sent) // duplicates
	r.Lost = r.Sent - r.Received
	r.finish()
	return r, nil
}
