// Package steered makes the sockets that the dispatcher steers to, as
// dispatch.Register accepts them, and reads what the kernel tells such a
// socket about each datagram. It is the one place where services, the
// benchmarks and the tests' echo servers make them.
//
// It stands apart from package dispatch so that the tests of dispatch may
// use servers that make their sockets here. What reads the kernel's
// messages builds on Linux only.
package steered

import (
	"context"
	"net"
	"syscall"
)

// ListenConfig returns the configuration of sockets that dispatch.Register
// accepts: TCP listeners without MPTCP (Go makes TCP listeners MPTCP by
// default, and the sockmap refuses MPTCP sockets). control, when not nil,
// sets the caller's own options on each socket before it is bound.
func ListenConfig(control func(network, address string, c syscall.RawConn) error) net.ListenConfig {
	lc := net.ListenConfig{Control: control}
	lc.SetMultipathTCP(false)
	return lc
}

// Listen returns a TCP listener on addr (such as "[::]:0") that
// dispatch.Register accepts.
func Listen(network, addr string) (*net.TCPListener, error) {
	lc := ListenConfig(nil)
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}
