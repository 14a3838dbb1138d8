package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/url"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// BenchmarkH2Serve measures HTTP/2 requests through the whole proxy, in
// process: a raw client keeping 32 streams in flight on one connection (as
// h2load -m32 does), the pipeline, an in-memory fasthttp origin answering
// 22 bytes. Client and origin costs are in it.
func BenchmarkH2Serve(b *testing.B) {
	origin := fasthttputil.NewInmemoryListener()
	defer origin.Close()
	go fasthttp.Serve(origin, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("hello from the origin\n") })
	u, _ := url.Parse("http://origin.test")
	p, err := New(Options{Config: Config{HTTPSPorts: []uint16{443}, Sites: []Site{{Hosts: []string{"*"}, Origins: []Origin{{URL: u}}}}}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.tcp.Close()
	o, _ := p.pools.get(u, OriginTLS{})
	o.hc.Dial = func(string) (net.Conn, error) { return origin.Dial() }

	ln := fasthttputil.NewInmemoryListener()
	defer ln.Close()
	cc := &countingConn{}
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		cc.Conn = raw
		c := net.Conn(cc)
		p.serveH2(c)
	}()
	c, err := ln.Dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	bw := bufio.NewWriterSize(c, 32<<10)
	fr := http2.NewFramer(bw, bufio.NewReaderSize(c, 32<<10))
	io.WriteString(bw, http2.ClientPreface)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	fr.WriteWindowUpdate(0, 1<<30)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	dec := hpack.NewDecoder(4096, func(hpack.HeaderField) {})
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "www.example.com"}, {Name: ":path", Value: "/"}, {Name: "user-agent", Value: "h2load"}, {Name: "accept", Value: "*/*"}} {
		enc.WriteField(f)
	}
	first := bytes.Clone(hb.Bytes())
	hb.Reset()
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "www.example.com"}, {Name: ":path", Value: "/"}, {Name: "user-agent", Value: "h2load"}, {Name: "accept", Value: "*/*"}} {
		enc.WriteField(f)
	}
	again := bytes.Clone(hb.Bytes()) // indexed, as h2load's later requests are
	const inflight = 32
	id := uint32(1)
	sent, done, open := 0, 0, 0
	b.ReportAllocs()
	b.ResetTimer()
	w0 := int64(-1)
	for done < b.N {
		if done == 0 && w0 < 0 && sent > 0 {
			w0 = cc.writes.Load() // the connection's setup aside
		}
		for open < inflight && sent < b.N {
			block := again
			if sent == 0 {
				block = first
			}
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true})
			id += 2
			sent++
			open++
		}
		bw.Flush()
		f, err := fr.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				b.Fatal(err)
			}
			if f.StreamEnded() {
				done++
				open--
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				done++
				open--
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			b.Fatalf("GOAWAY %v", f.ErrCode)
		case *http2.RSTStreamFrame:
			b.Fatalf("RST_STREAM %v", f.ErrCode)
		}
	}
	b.ReportMetric(float64(cc.writes.Load()-w0)/float64(b.N), "writes/resp")
}
