package load

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// TCPConnectOptions configures TCPConnect.
type TCPConnectOptions struct {
	Addr     string        // host:port
	Conns    int           // workers, each one connection at a time; default 1
	Rate     float64       // new connections per second, open loop; 0 = closed loop
	Duration time.Duration // default 10 s
	Timeout  time.Duration // per connection, default 5 s

	// Request is written once connected, if not empty. Then Response bytes
	// are read if Response > 0; else, when a Request was written, the
	// answer is read until the server closes (an HTTP/1.1 request with
	// "Connection: close", say).
	Request  []byte
	Response int
	// Reset closes with an RST (SO_LINGER 0) instead of a FIN, leaving no
	// TIME_WAIT behind on the client: for rates above what the ephemeral
	// ports allow.
	Reset bool
	// TLS, if set, makes each connection a TLS client with this
	// configuration: a full handshake each (unless it has a
	// ClientSessionCache), then Request and Response over TLS: a
	// handshake-rate generator.
	TLS *tls.Config

	LocalAddr string                                                            // bind the client's sockets to this IP
	Dial      func(ctx context.Context, network, addr string) (net.Conn, error) // replaces LocalAddr
}

// ConnResult is what TCPConnect measured: Conns connections attempted,
// Errors of them failed (connect, write, short read, timeout), Unsent
// planned by an open loop but never begun (every worker busy); Latency
// from the intended start (open loop) or the actual one (closed loop) to
// the close, for the successful ones and the unsent; Rate successful
// connections per second of Duration.
type ConnResult struct {
	Conns, Errors int
	Unsent        int
	Duration      time.Duration
	Latency       *Histogram
	Rate          float64
	FirstError    string
}

// TCPConnect opens, optionally uses, and closes TCP connections, one per
// request of the schedule.
func TCPConnect(ctx context.Context, o TCPConnectOptions) (*ConnResult, error) {
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	o.Conns = max(o.Conns, 1)
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	dial := o.Dial
	if dial == nil {
		var err error
		if dial, err = dialer(o.LocalAddr); err != nil {
			return nil, err
		}
	}
	bufs := make([][]byte, o.Conns)
	for i := range bufs {
		bufs[i] = make([]byte, max(o.Response, 16<<10))
	}
	do := func(ctx context.Context, w int) error {
		ctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		raw, err := dial(ctx, "tcp", o.Addr)
		if err != nil {
			return err
		}
		conn := raw
		defer func() {
			if tc, ok := raw.(*net.TCPConn); ok && o.Reset {
				tc.SetLinger(0)
			}
			raw.Close()
		}()
		deadline, _ := ctx.Deadline()
		conn.SetDeadline(deadline)
		if o.TLS != nil {
			tc := tls.Client(raw, o.TLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				return err
			}
			conn = tc
		}
		if len(o.Request) == 0 && o.Response <= 0 {
			return nil
		}
		if len(o.Request) > 0 {
			if _, err := conn.Write(o.Request); err != nil {
				return err
			}
		}
		buf := bufs[w]
		if o.Response > 0 {
			_, err := io.ReadFull(conn, buf[:o.Response])
			return err
		}
		n := 0
		for {
			m, err := conn.Read(buf)
			n += m
			if errors.Is(err, io.EOF) {
				if n == 0 {
					return errors.New("load: connection closed with no answer")
				}
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	s := newSchedule(ctx, o.Rate, o.Duration)
	total, elapsed, unsent := drive(ctx, s, o.Conns, do)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &ConnResult{
		Conns: total.requests, Errors: total.errors, Unsent: unsent,
		Duration: elapsed, Latency: total.hist,
		Rate: float64(total.requests-total.errors) / elapsed.Seconds(),
	}
	if total.firstErr != nil {
		r.FirstError = total.firstErr.Error()
	}
	return r, nil
}
