package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Upgrades (WebSocket, and any other protocol asked for with Upgrade on
// HTTP/1.1) get a connection to the origin of their own, outside the
// shared pools: a long-lived stream is not touched by the pools' churn,
// and the pools never hold a connection that changed protocol. After the
// origin's 101 the proxy relays bytes both ways until either side ends.

// tunnels tracks the relayed connections for a graceful shutdown.
type tunnels struct {
	mu   sync.Mutex
	open map[*tunnel]struct{}
	wg   sync.WaitGroup
}

type tunnel struct{ client, origin net.Conn }

func (ts *tunnels) add(t *tunnel) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.open == nil {
		ts.open = map[*tunnel]struct{}{}
	}
	ts.open[t] = struct{}{}
	ts.wg.Add(1)
}

func (ts *tunnels) remove(t *tunnel) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.open, t)
	ts.wg.Done()
}

// closeAll ends every tunnel.
func (ts *tunnels) closeAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for t := range ts.open {
		t.client.Close()
		t.origin.Close()
	}
}

// serveUpgrade relays an HTTP/1.1 request that asks to change protocol.
func (p *Proxy) serveUpgrade(ctx *fasthttp.RequestCtx, st *state, s *site, rt *route, rec *record, upgrade []byte) {
	req := &ctx.Request
	if hasBody(&req.Header) {
		ctx.SetConnectionClose()
		p.failH1(ctx, st, rec, 400, "an Upgrade request has no body")
		return
	}
	o := rt.pick(rec.start, nil)
	if o == nil {
		p.failH1(ctx, st, rec, 503, "no origin of this site is up")
		return
	}
	rec.upstream = o.name
	// The forwarding policy dropped Connection and Upgrade as hop-by-hop;
	// this hop asks for the upgrade again.
	req.Header.Set("Connection", "Upgrade")
	req.Header.SetBytesV("Upgrade", upgrade)

	oc, br, resp, err := p.askUpgrade(o, s, req)
	if err != nil {
		p.log.Info("cdn upstream error", "request_id", rec.id, "upstream", o.name, "error", err)
		status, msg := errorStatus(err)
		p.failH1(ctx, st, rec, status, msg)
		return
	}
	rec.status = resp.StatusCode
	if resp.StatusCode != http.StatusSwitchingProtocols {
		p.upgradeDeclined(ctx, st, rec, resp, oc)
		return
	}
	oc.SetDeadline(time.Time{})
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) { p.runTunnel(c, oc, br, resp, rec) })
}

// askUpgrade sends the Upgrade request's head to origin o and reads its
// response, within the upstream timeout. br holds what the origin sent
// after its response head.
func (p *Proxy) askUpgrade(o *origin, s *site, req *fasthttp.Request) (oc net.Conn, br *bufio.Reader, resp *http.Response, err error) {
	oc, err = p.dialOrigin(o)
	if err != nil {
		if originFault(err) {
			o.failures.Add(1)
			o.health.failed(time.Now(), err, s.passive)
		}
		return nil, nil, nil, err
	}
	oc.SetDeadline(time.Now().Add(p.limits().UpstreamTimeout))
	br = bufio.NewReader(oc)
	if _, err = oc.Write(req.Header.Header()); err == nil {
		resp, err = http.ReadResponse(br, nil)
	}
	if err != nil {
		oc.Close()
		return nil, nil, nil, err
	}
	o.health.succeeded()
	return oc, br, resp, nil
}

// upgradeDeclined answers with the origin's response to an Upgrade it
// declined, an ordinary one, after which the connection to the origin
// ends.
func (p *Proxy) upgradeDeclined(ctx *fasthttp.RequestCtx, st *state, rec *record, resp *http.Response, oc net.Conn) {
	for k, vs := range resp.Header {
		for _, v := range vs {
			ctx.Response.Header.Add(k, v)
		}
	}
	ctx.Response.SetStatusCode(resp.StatusCode)
	rewriteResponse(&ctx.Response.Header, rec.id, st.altSvcOver(ctx.IsTLS()))
	ctx.SetConnectionClose()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	oc.Close()
	ctx.Response.SetBody(body)
	rec.bytes = int64(len(body))
	p.done(rec)
}

// runTunnel relays the upgraded connection c and its origin's oc both ways
// until both ends are done, after the origin's 101 and what br holds.
func (p *Proxy) runTunnel(c, oc net.Conn, br *bufio.Reader, resp *http.Response, rec *record) {
	t := &tunnel{client: c, origin: oc}
	p.tunnels.add(t)
	p.m.upgrades.Inc()
	defer func() {
		c.Close()
		oc.Close()
		p.m.upgrades.Dec()
		p.tunnels.remove(t)
		p.done(rec)
	}()
	c.SetDeadline(time.Time{})
	// The origin's 101, its headers as they are, and our request id.
	head := []byte("HTTP/1.1 101 " + http.StatusText(http.StatusSwitchingProtocols) + "\r\n")
	for k, vs := range resp.Header {
		for _, v := range vs {
			head = append(head, k+": "+v+"\r\n"...)
		}
	}
	head = append(head, "X-Request-Id: "+rec.id+"\r\n\r\n"...)
	if _, err := c.Write(head); err != nil {
		return
	}
	// br may hold the origin's first frames, read with its 101.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := c.Write(b); err != nil {
			return
		}
	}
	up := relay(c, oc, p.limits().TunnelIdleTimeout)
	down := relay(oc, c, p.limits().TunnelIdleTimeout)
	for range 2 {
		select {
		case n := <-up:
			rec.bytes += n
		case <-down:
		}
	}
}

// relay copies src to dst, each read bounded by idle, then half-closes
// dst (or closes it, if it cannot); the channel gets the bytes copied.
func relay(dst, src net.Conn, idle time.Duration) <-chan int64 {
	done := make(chan int64, 1)
	go func() {
		buf := make([]byte, 32<<10)
		var n int64
		for {
			src.SetReadDeadline(time.Now().Add(idle))
			m, err := src.Read(buf)
			if m > 0 {
				dst.SetWriteDeadline(time.Now().Add(idle))
				if _, werr := dst.Write(buf[:m]); werr != nil {
					break
				}
				n += int64(m)
			}
			if err != nil {
				break
			}
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- n
	}()
	return done
}

// dialOrigin opens a connection of its own to o, with TLS for https.
func (p *Proxy) dialOrigin(o *origin) (net.Conn, error) {
	op := p.pools
	var c net.Conn
	var err error
	if o.hc.IsTLS {
		c, err = op.dialTLS(context.Background(), o.hc.Addr, o.hc.TLSConfig.Clone(), op.t.Load().connect)
	} else {
		c, err = op.dial(context.Background(), o.hc.Addr, op.t.Load().connect)
	}
	if err == nil {
		o.connects.Add(1)
	}
	return c, err
}

// headerHasToken reports whether comma-separated header values list tok.
func headerHasToken(vs [][]byte, tok string) bool {
	for _, v := range vs {
		for _, f := range bytes.Split(v, []byte{','}) {
			if bytes.EqualFold(bytes.TrimSpace(f), []byte(tok)) {
				return true
			}
		}
	}
	return false
}
