package proxy

import (
	"net"
	"sync"
)

// chanListener is a net.Listener that delivers no connection: the accept
// loop hands connections to the servers itself, and the servers' Serve and
// Shutdown still want a listener of their own. Accept waits for Close.
type chanListener struct {
	addr  net.Addr
	once  sync.Once
	close chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, close: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	<-l.close
	return nil, net.ErrClosed
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.close) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
