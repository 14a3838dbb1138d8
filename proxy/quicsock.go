package proxy

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// quicSock is the cdn's QUIC socket as quic.Transport sees it: the
// registered listener (the dual-stack wildcard on http3_port) and, for each
// QUIC connection whose handshake completed, a UDP socket of its own, bound
// to the address and port the client dialled and connected to the client.
// The kernel finds a connected socket by its 4-tuple before the sk_lookup
// program runs, so a connection keeps its datagrams after its address moved
// to another service and after another process registered cdn/udp (a live
// upgrade). Migration (a datagram from a new client address) arrives on the
// listener as before.
//
// quic-go's fast path stays: quicSock is an OOBCapablePacketConn with
// ReadBatch, so quic-go reads in batches (recvmmsg) and writes with packet
// info, GSO and ECN. Reading needs no goroutine per connection: a
// level-triggered epoll instance holds the listener and every connected
// socket, and is itself waited on through Go's netpoller; ReadBatch reads
// the sockets it reports ready. The socket options quic-go sets through
// SyscallConn (ECN and packet info reception, DF, buffer sizes) are applied
// to the listener and replayed on every new socket, so datagrams read from a
// connected socket carry the dialled address as packet info too.
type quicSock struct {
	socket func(domain, typ, proto int) (int, error) // makes the connected sockets (Options.Socket)
	ln     *net.UDPConn
	lnPC   *ipv4.PacketConn
	lnRaw  syscall.RawConn
	ep     *os.File // the epoll instance, pollable
	epRaw  syscall.RawConn

	replay sync.Mutex   // held while opts run on a new socket
	mu     sync.RWMutex // guards opts, rbuf, wbuf, byID, byPath, perAddr, nextID
	opts   []func(fd uintptr)
	rbuf   int
	wbuf   int
	byID   map[uint64]*connSock
	byPath map[sockPath]*connSock
	// perAddr counts the sockets on each dialled address: the kernel scans
	// them all for every datagram to that address that no connected
	// socket takes (new flows), so maxPerAddr bounds that cost.
	perAddr    map[netip.Addr]int
	maxPerAddr int
	nextID     uint64
	open       atomic.Int64 // connected sockets open
	closedCh   chan struct{}
	once       sync.Once

	// The reader's own (quic-go reads from one goroutine).
	evs      []unix.EpollEvent
	more     []*connSock // sockets that filled their part of the last batch
	lnMore   bool        // the listener did
	fromMore bool        // this batch read them (not epoll)

	noConnect bool // benchmarks: every connection stays on the listener

	sockets  prometheus.Gauge       // nil: not counted
	failures *prometheus.CounterVec // reason; nil: not counted
}

// connSock is one connected socket, shared by the connections on its
// 4-tuple (a client that reconnects from the same port while its previous
// connection is closing).
type connSock struct {
	id    uint64
	path  sockPath
	c     *net.UDPConn
	raw   syscall.RawConn
	pc    *ipv4.PacketConn
	users int // under quicSock.mu
}

// sockPath is what a connected socket is for: the client and the address
// it dialled (the port is the listener's).
type sockPath struct {
	remote netip.AddrPort
	local  netip.Addr
}

// lnID is the listener's id in the epoll set.
const lnID = 0

// errNoSock means a connection keeps using the listener.
var errNoSock = errors.New("cdn: no connected QUIC socket")

// setMaxPerAddr changes the bound for connections that attach from now on
// (a reload of limits.max_quic_sockets_per_address); sockets above a
// lower bound stay.
func (s *quicSock) setMaxPerAddr(n int) {
	s.mu.Lock()
	s.maxPerAddr = n
	s.mu.Unlock()
}

// newQUICSock serves ln and makes the connected sockets with socket (nil:
// unix.Socket).
func newQUICSock(socket func(domain, typ, proto int) (int, error), ln *net.UDPConn, maxPerAddr int, sockets prometheus.Gauge, failures *prometheus.CounterVec) (*quicSock, error) {
	if socket == nil {
		socket = unix.Socket
	}
	raw, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("cdn: epoll for the QUIC sockets: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, err
	}
	s := &quicSock{
		socket: socket, ln: ln, lnPC: ipv4.NewPacketConn(ln), lnRaw: raw,
		ep:   os.NewFile(uintptr(epfd), "quic-epoll"),
		byID: map[uint64]*connSock{}, byPath: map[sockPath]*connSock{}, nextID: lnID + 1,
		perAddr: map[netip.Addr]int{}, maxPerAddr: maxPerAddr,
		evs: make([]unix.EpollEvent, 64), closedCh: make(chan struct{}),
		sockets: sockets, failures: failures,
	}
	if s.epRaw, err = s.ep.SyscallConn(); err != nil {
		s.ep.Close()
		return nil, err
	}
	var cerr error
	if err := raw.Control(func(fd uintptr) { cerr = s.epollAdd(int(fd), lnID) }); err != nil || cerr != nil {
		s.ep.Close()
		return nil, fmt.Errorf("cdn: epoll for the QUIC sockets: %w", errors.Join(err, cerr))
	}
	return s, nil
}

func (s *quicSock) epollAdd(fd int, id uint64) error {
	var cerr error
	err := s.epRaw.Control(func(epfd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
		cerr = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_ADD, fd, &ev)
	})
	return errors.Join(err, cerr)
}

// ReadBatch reads datagrams from the sockets that are ready: those that
// filled the previous batch (every other batch), else those epoll reports,
// waiting in Go's netpoller while none is. Datagrams from a connected socket carry its
// packet info, as the listener's do.
func (s *quicSock) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	flags |= unix.MSG_DONTWAIT
	// Every other batch asks epoll, whose ready list rotates: a socket that
	// always fills a batch (a flood on the listener) cannot starve the rest.
	if s.fromMore = !s.fromMore; s.fromMore {
		if n, err := s.readMore(ms, flags); n > 0 || err != nil {
			return n, err
		}
	}
	var n int
	var rerr error
	err := s.epRaw.Read(func(epfd uintptr) bool {
		for {
			k, err := unix.EpollWait(int(epfd), s.evs, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				rerr = err
				return true
			}
			if k == 0 {
				return false // nothing ready: wait for the epoll instance
			}
			for _, ev := range s.evs[:k] {
				if n == len(ms) {
					break // the others stay ready (level-triggered)
				}
				id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
				got, err := s.readOne(id, ms[n:], flags)
				if err != nil {
					rerr = err
					return true
				}
				n += got
			}
			if n > 0 {
				return true
			}
		}
	})
	if err != nil {
		return 0, err // a deadline (Transport.Close) or the instance closed
	}
	return n, rerr
}

// readMore reads the sockets that filled their share of the last batch.
func (s *quicSock) readMore(ms []ipv4.Message, flags int) (int, error) {
	if !s.lnMore && len(s.more) == 0 {
		return 0, nil
	}
	n := 0
	if s.lnMore {
		s.lnMore = false
		got, err := s.readOne(lnID, ms, flags)
		if err != nil {
			return 0, err
		}
		n += got
	}
	more := s.more
	s.more = s.more[len(s.more):]
	for i, cs := range more {
		if n == len(ms) {
			s.more = append(s.more, more[i:]...)
			break
		}
		got := s.readConn(cs, ms[n:], flags)
		n += got
	}
	return n, nil
}

// readOne reads the socket id into ms. Only the listener's failure is an
// error: a connected socket that failed (an ICMP error, closed meanwhile)
// just reads nothing.
func (s *quicSock) readOne(id uint64, ms []ipv4.Message, flags int) (int, error) {
	if id == lnID {
		n, err := s.lnPC.ReadBatch(ms, flags)
		if n < 0 {
			n = 0
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		s.lnMore = n == len(ms)
		return n, nil
	}
	s.mu.RLock()
	cs := s.byID[id]
	s.mu.RUnlock()
	if cs == nil {
		return 0, nil
	}
	return s.readConn(cs, ms, flags), nil
}

func (s *quicSock) readConn(cs *connSock, ms []ipv4.Message, flags int) int {
	n, _ := cs.pc.ReadBatch(ms, flags)
	if n < 0 {
		n = 0
	}
	if n == len(ms) {
		s.more = append(s.more, cs)
	}
	return n
}

// WriteMsgUDP sends b through the connected socket of (addr, the source in
// oob's packet info) when there is one, else through the listener.
func (s *quicSock) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	if addr != nil && s.open.Load() > 0 {
		if local, rest, ok := pktinfoSource(oob); ok {
			ap := addr.AddrPort()
			path := sockPath{remote: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), local: local}
			s.mu.RLock()
			cs := s.byPath[path]
			s.mu.RUnlock()
			if cs != nil {
				// Connected and bound: no destination, no packet info.
				n, err := cs.send(b, rest)
				if !errors.Is(err, net.ErrClosed) {
					return n, len(oob), err
				}
			}
		}
	}
	return s.ln.WriteMsgUDP(b, oob, addr)
}

// send writes b with the control messages oob (GSO, ECN) on the connected
// socket: sendmsg without a destination, which net.UDPConn refuses for a
// socket it did not connect itself. Errors are sendmsg's, as quic-go
// expects (it tells GSO failures by them).
func (cs *connSock) send(b, oob []byte) (int, error) {
	var n int
	var serr error
	err := cs.raw.Write(func(fd uintptr) bool {
		n, serr = unix.SendmsgN(int(fd), b, oob, nil, unix.MSG_DONTWAIT)
		return serr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return n, os.NewSyscallError("sendmsg", serr)
	}
	return n, nil
}

// pktinfoSource returns the source address of the packet info control
// message that quic-go puts first in oob, and the control messages after
// it.
func pktinfoSource(oob []byte) (netip.Addr, []byte, bool) {
	if len(oob) < unix.SizeofCmsghdr {
		return netip.Addr{}, nil, false
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	l := int(h.Len)
	if l < unix.SizeofCmsghdr || l > len(oob) {
		return netip.Addr{}, nil, false
	}
	body := oob[unix.CmsgSpace(0):l]
	next := unix.CmsgSpace(l - unix.CmsgLen(0))
	if next > len(oob) {
		next = len(oob)
	}
	switch {
	case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(body) >= 12:
		// struct in_pktinfo { ifindex; spec_dst; addr }: the source is spec_dst.
		return netip.AddrFrom4([4]byte(body[4:8])), oob[next:], true
	case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(body) >= 16:
		return netip.AddrFrom16([16]byte(body[:16])).Unmap(), oob[next:], true
	}
	return netip.Addr{}, nil, false
}

// attach gives the connection between remote and local (the address the
// client dialled, on the listener's port) a connected socket, or shares the
// one its 4-tuple has. release gives it back; the last release closes it.
// An error leaves the connection on the listener (counted by reason).
func (s *quicSock) attach(remote, local netip.AddrPort, acquire func() bool, releaseFD func()) (release func(), err error) {
	path := sockPath{remote: netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()), local: local.Addr().Unmap()}
	select {
	case <-s.closedCh:
		return nil, errNoSock
	default:
	}
	if s.noConnect {
		return nil, errNoSock
	}
	s.mu.Lock()
	if cs := s.byPath[path]; cs != nil {
		cs.users++
		s.mu.Unlock()
		return s.releaser(cs, releaseFD), nil
	}
	if s.perAddr[path.local] >= s.maxPerAddr {
		s.mu.Unlock()
		s.fail("address_cap")
		return nil, fmt.Errorf("%w: %d on %s already (limits.max_quic_sockets_per_address)", errNoSock, s.maxPerAddr, path.local)
	}
	s.perAddr[path.local]++ // held while connecting
	s.mu.Unlock()
	unhold := func() {
		s.mu.Lock()
		if s.perAddr[path.local]--; s.perAddr[path.local] <= 0 {
			delete(s.perAddr, path.local)
		}
		s.mu.Unlock()
	}
	if !acquire() {
		unhold()
		s.fail("budget")
		return nil, fmt.Errorf("%w: the descriptor budget is spent", errNoSock)
	}
	var c *net.UDPConn
	var reason string
	c, reason, err = s.connect(path, local.Port())
	if err != nil {
		unhold()
		releaseFD()
		s.fail(reason)
		return nil, err
	}
	s.mu.Lock()
	if cs := s.byPath[path]; cs != nil { // another connection raced us
		cs.users++
		s.mu.Unlock()
		unhold()
		c.Close()
		releaseFD()
		return s.releaser(cs, releaseFD), nil
	}
	raw, _ := c.SyscallConn()
	cs := &connSock{id: s.nextID, path: path, c: c, raw: raw, pc: ipv4.NewPacketConn(c), users: 1}
	s.nextID++
	s.byID[cs.id] = cs
	s.byPath[path] = cs
	s.mu.Unlock()
	var aerr error
	if err := raw.Control(func(fd uintptr) { aerr = s.epollAdd(int(fd), cs.id) }); err != nil || aerr != nil {
		s.mu.Lock()
		delete(s.byID, cs.id)
		delete(s.byPath, path)
		s.mu.Unlock()
		unhold()
		c.Close()
		releaseFD()
		s.fail("epoll")
		return nil, errors.Join(err, aerr)
	}
	s.open.Add(1)
	if s.sockets != nil {
		s.sockets.Inc()
	}
	return s.releaser(cs, releaseFD), nil
}

func (s *quicSock) releaser(cs *connSock, releaseFD func()) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			cs.users--
			last := cs.users == 0
			if last {
				delete(s.byID, cs.id)
				if s.byPath[cs.path] == cs {
					delete(s.byPath, cs.path)
				}
				if s.perAddr[cs.path.local]--; s.perAddr[cs.path.local] <= 0 {
					delete(s.perAddr, cs.path.local)
				}
			}
			s.mu.Unlock()
			if !last {
				return
			}
			// Out of the epoll set before it closes: the reader no longer
			// finds its id, and a socket that stayed ready there until its
			// close completes would wake it for nothing.
			cs.raw.Control(func(fd uintptr) {
				s.epRaw.Control(func(ep uintptr) { unix.EpollCtl(int(ep), unix.EPOLL_CTL_DEL, int(fd), nil) })
			})
			cs.c.Close()
			releaseFD()
			s.open.Add(-1)
			if s.sockets != nil {
				s.sockets.Dec()
			}
		})
	}
}

func (s *quicSock) fail(reason string) {
	if s.failures != nil {
		s.failures.WithLabelValues(reason).Inc()
	}
}

// connect makes the socket of path: the listener's family (dual-stack
// IPv6), SO_REUSEADDR beside the listener, IPV6_FREEBIND (the dialled
// address may be only routed locally), quic-go's options, bound to the
// dialled address and port and connected to the client. It returns the
// reason of a failure for the metric.
func (s *quicSock) connect(path sockPath, port uint16) (*net.UDPConn, string, error) {
	fd, err := s.socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, "socket", fmt.Errorf("%w: socket: %v", errNoSock, err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := errors.Join(
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1),
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0),
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1),
	); err != nil {
		return nil, "socket", fmt.Errorf("%w: socket options: %v", errNoSock, err)
	}
	s.mu.RLock()
	opts, rbuf, wbuf := s.opts, s.rbuf, s.wbuf
	s.mu.RUnlock()
	if rbuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rbuf)
	}
	if wbuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, wbuf)
	}
	// quic-go's functions write what they find into variables of their
	// own: one replay at a time.
	s.replay.Lock()
	for _, f := range opts {
		f(uintptr(fd))
	}
	s.replay.Unlock()
	local := &unix.SockaddrInet6{Port: int(port), Addr: path.local.As16()}
	if err := unix.Bind(fd, local); err != nil {
		return nil, "bind", fmt.Errorf("%w: bind [%s]:%d: %v", errNoSock, path.local, port, err)
	}
	remote := &unix.SockaddrInet6{Port: int(path.remote.Port()), Addr: path.remote.Addr().As16()}
	if err := unix.Connect(fd, remote); err != nil {
		return nil, "connect", fmt.Errorf("%w: connect %s from [%s]:%d: %v", errNoSock, path.remote, path.local, port, err)
	}
	f := os.NewFile(uintptr(fd), "quic-conn")
	ok = true
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, "socket", fmt.Errorf("%w: %v", errNoSock, err)
	}
	return c.(*net.UDPConn), "", nil
}

// connected returns how many connected sockets are open.
func (s *quicSock) connected() int { return int(s.open.Load()) }

// Close closes the epoll instance, every connected socket and the
// listener.
func (s *quicSock) Close() error {
	s.once.Do(func() { close(s.closedCh) })
	s.mu.Lock()
	socks := make([]*connSock, 0, len(s.byID))
	for _, cs := range s.byID {
		socks = append(socks, cs)
	}
	s.mu.Unlock()
	for _, cs := range socks {
		cs.c.Close()
	}
	return errors.Join(s.ep.Close(), s.ln.Close())
}

// SyscallConn returns the listener's raw connection, which also records
// every option quic-go sets through Control, to replay on each connected
// socket.
func (s *quicSock) SyscallConn() (syscall.RawConn, error) { return recordingRaw{s}, nil }

type recordingRaw struct{ s *quicSock }

func (r recordingRaw) Control(f func(fd uintptr)) error {
	r.s.mu.Lock()
	r.s.opts = append(r.s.opts, f)
	r.s.mu.Unlock()
	return r.s.lnRaw.Control(f)
}

func (r recordingRaw) Read(f func(fd uintptr) bool) error  { return r.s.lnRaw.Read(f) }
func (r recordingRaw) Write(f func(fd uintptr) bool) error { return r.s.lnRaw.Write(f) }

func (s *quicSock) SetReadBuffer(n int) error {
	s.mu.Lock()
	s.rbuf = n
	s.mu.Unlock()
	return s.ln.SetReadBuffer(n)
}

func (s *quicSock) SetWriteBuffer(n int) error {
	s.mu.Lock()
	s.wbuf = n
	s.mu.Unlock()
	return s.ln.SetWriteBuffer(n)
}

// The rest of net.PacketConn: quic-go reads through ReadBatch; these are
// the listener's.

func (s *quicSock) ReadMsgUDP(b, oob []byte) (int, int, int, *net.UDPAddr, error) {
	return s.ln.ReadMsgUDP(b, oob)
}
func (s *quicSock) ReadFrom(b []byte) (int, net.Addr, error)  { return s.ln.ReadFrom(b) }
func (s *quicSock) WriteTo(b []byte, a net.Addr) (int, error) { return s.ln.WriteTo(b, a) }
func (s *quicSock) LocalAddr() net.Addr                       { return s.ln.LocalAddr() }
func (s *quicSock) SetDeadline(t time.Time) error             { return s.ep.SetDeadline(t) }
func (s *quicSock) SetReadDeadline(t time.Time) error         { return s.ep.SetReadDeadline(t) }
func (s *quicSock) SetWriteDeadline(t time.Time) error        { return s.ln.SetWriteDeadline(t) }

// quicSockMetrics count the connected QUIC sockets.
type quicSockMetrics struct {
	open     prometheus.Gauge
	failures *prometheus.CounterVec
}

func newQUICSockMetrics(reg prometheus.Registerer) quicSockMetrics {
	m := quicSockMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeproxy_cdn_quic_sockets_connected",
			Help: "Connected UDP sockets open, one per HTTP/3 connection whose handshake completed (each takes a descriptor of the cdn's budget).",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_quic_socket_failures_total",
			Help: "HTTP/3 connections left on the listener socket because their connected socket could not be made, by reason: budget (the descriptor budget said no), address_cap (limits.max_quic_sockets_per_address), socket, bind, connect, epoll.",
		}, []string{"reason"}),
	}
	for _, r := range []string{"budget", "address_cap", "socket", "bind", "connect", "epoll"} {
		m.failures.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.open, m.failures)
	}
	return m
}

// CheckResetKeyFile checks the stateless-reset key file as a start reads
// it, when it exists: a start makes a missing one, edgeproxy check does
// not.
func CheckResetKeyFile(path string) error {
	if path == "" {
		return nil
	}
	_, err := readResetKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// readResetKey reads the stateless-reset key at path: 32 bytes that others
// may not read.
func readResetKey(path string) (*quic.StatelessResetKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cdn.quic_reset_key_file %s: mode %v: others may read it (want 0600)", path, st.Mode().Perm())
	}
	var k quic.StatelessResetKey
	b := make([]byte, len(k)+1)
	n, err := io.ReadFull(f, b)
	if n != len(k) || !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("cdn.quic_reset_key_file %s: %d bytes, want %d", path, n, len(k))
	}
	copy(k[:], b)
	return &k, nil
}

// loadResetKey reads the stateless-reset key from path, or makes it there
// (32 random bytes, mode 0600, written to a temporary file and linked into
// place, so two processes starting at once agree on one key). Empty path:
// a random key for this process (quic-go sends no resets without one).
// made reports a new file.
func loadResetKey(path string) (key *quic.StatelessResetKey, made bool, err error) {
	if path == "" {
		var k quic.StatelessResetKey
		_, err := rand.Read(k[:])
		return &k, false, err
	}
	read := func() (*quic.StatelessResetKey, error) { return readResetKey(path) }
	k, err := read()
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	var nk quic.StatelessResetKey
	if _, err := rand.Read(nk[:]); err != nil {
		return nil, false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".quic-reset-key-*")
	if err != nil {
		return nil, false, fmt.Errorf("cdn.quic_reset_key_file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(nk[:])
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		return nil, false, fmt.Errorf("cdn.quic_reset_key_file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process made it first
			k, err := read()
			return k, false, err
		}
		return nil, false, fmt.Errorf("cdn.quic_reset_key_file %s: %w", path, err)
	}
	return &nk, true, nil
}
