//go:build linux

package dispatch

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// sockErr is a sentinel error that also matches an errno with errors.Is.
type sockErr struct {
	msg   string
	errno unix.Errno
}

func (e *sockErr) Error() string        { return e.msg }
func (e *sockErr) Is(target error) bool { return target == e.errno }

var (
	// ErrBadSocket reports a socket that the data plane cannot use; it also
	// matches unix.EINVAL.
	ErrBadSocket error = &sockErr{"socket cannot be registered", unix.EINVAL}
	// ErrMPTCP reports an MPTCP socket, which the sockmap refuses; it also
	// matches unix.EOPNOTSUPP. Go 1.24+ makes TCP listeners MPTCP by default.
	ErrMPTCP error = &sockErr{"socket is MPTCP, which the sockmap refuses: create the listener with package steered, or net.ListenConfig.SetMultipathTCP(false)", unix.EOPNOTSUPP}
)

// CheckSocket says whether conn could be registered under label, as
// Register checks it, without touching the dispatcher: a start checks
// every socket before its first write.
func CheckSocket(label string, conn syscall.Conn) error { return onSocket(label, conn, nil) }

// onSocket checks that conn fits label, as checkSocket says, then runs fn,
// when not nil, on its descriptor. Errors name the label.
func onSocket(label string, conn syscall.Conn, fn func(fd uintptr) error) error {
	if err := CheckLabel(label); err != nil {
		return fmt.Errorf("register: %w: %v", ErrBadSocket, err)
	}
	want, _ := labelProtocol(label)
	raw, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("register %s: %w", label, err)
	}
	var opErr error
	if err := raw.Control(func(fd uintptr) {
		if opErr = checkSocket(int(fd), want); opErr == nil && fn != nil {
			opErr = fn(fd)
		}
	}); err != nil {
		return fmt.Errorf("register %s: %w", label, err)
	}
	if opErr != nil {
		return fmt.Errorf("register %s: %w", label, opErr)
	}
	return nil
}

// Register makes conn the socket of label: every lookup that the table sends
// to label is assigned to it. Registering another socket under the same label
// replaces the first in one step. conn must be a TCP listener or an
// unconnected UDP socket of the label's protocol (the label's suffix), IPv4
// or dual-stack IPv6; the socket is checked and the error says what does not
// fit. The socket stays registered until it is closed or replaced.
func (d *Dispatcher) Register(label string, conn syscall.Conn) error {
	if err := CheckLabel(label); err != nil {
		return fmt.Errorf("register: %w: %v", ErrBadSocket, err)
	}
	return d.change(func(objs *bpf.DispatchObjects) error {
		return onSocket(label, conn, func(fd uintptr) error {
			idx, err := d.labelIndex(label)
			if err != nil {
				return err
			}
			return objs.Sockets.Update(idx, uint64(fd), ebpf.UpdateAny)
		})
	})
}

// Unregister removes the socket of label; lookups for it then drop and count
// a miss. It is not an error if none is registered.
func (d *Dispatcher) Unregister(label string) error {
	return d.change(func(objs *bpf.DispatchObjects) error {
		idx, ok := d.labelOf(label)
		if !ok {
			return nil
		}
		if err := objs.Sockets.Delete(idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("unregister %s: %w", label, err)
		}
		return nil
	})
}

// Cookie returns the socket cookie registered under label, and false if
// there is none.
func (d *Dispatcher) Cookie(label string) (uint64, bool) {
	objs, done, err := d.use()
	if err != nil {
		return 0, false
	}
	defer done()
	return d.cookie(objs, label)
}

func (d *Dispatcher) cookie(objs *bpf.DispatchObjects, label string) (uint64, bool) {
	idx, ok := d.labelOf(label)
	if !ok {
		return 0, false
	}
	var cookie uint64
	if err := objs.Sockets.Lookup(idx, &cookie); err != nil {
		return 0, false
	}
	return cookie, true
}

// checkSocket says what makes fd unfit for a label of protocol want.
func checkSocket(fd int, want Protocol) error {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("%w: not a socket: %v", ErrBadSocket, err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("%w: read socket type: %v", ErrBadSocket, err)
	}
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return fmt.Errorf("%w: read socket protocol: %v", ErrBadSocket, err)
	}

	if err := checkFamily(fd, domain); err != nil {
		return err
	}

	if proto == unix.IPPROTO_MPTCP {
		return ErrMPTCP
	}
	switch want {
	case TCP:
		if typ != unix.SOCK_STREAM || proto != unix.IPPROTO_TCP {
			return fmt.Errorf("%w: label wants a TCP socket, this one is of type %d and protocol %d", ErrBadSocket, typ, proto)
		}
		listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil {
			return fmt.Errorf("%w: read SO_ACCEPTCONN: %v", ErrBadSocket, err)
		}
		if listening == 0 {
			return fmt.Errorf("%w: the TCP socket is not listening", ErrBadSocket)
		}
	case UDP:
		if typ != unix.SOCK_DGRAM || proto != unix.IPPROTO_UDP {
			return fmt.Errorf("%w: label wants a UDP socket, this one is of type %d and protocol %d", ErrBadSocket, typ, proto)
		}
		if sa, err := unix.Getpeername(fd); err == nil {
			return fmt.Errorf("%w: the UDP socket is connected (to %v); register an unconnected one", ErrBadSocket, sockaddrString(sa))
		} else if !errors.Is(err, unix.ENOTCONN) {
			return fmt.Errorf("%w: getpeername: %v", ErrBadSocket, err)
		}
	}
	return nil
}

// checkFamily says what makes fd, of address family domain, unfit: only
// IPv4 and dual-stack IPv6 sockets take every packet a label may get.
func checkFamily(fd, domain int) error {
	switch domain {
	case unix.AF_INET:
		return nil
	case unix.AF_INET6:
		v6only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return fmt.Errorf("%w: read IPV6_V6ONLY: %v", ErrBadSocket, err)
		}
		if v6only != 0 {
			return fmt.Errorf("%w: the IPv6 socket is IPv6-only and cannot take IPv4 traffic: bind it to the wildcard [::] (Go makes a socket bound to a specific IPv6 address IPv6-only)", ErrBadSocket)
		}
		return nil
	}
	return fmt.Errorf("%w: address family %d is neither AF_INET nor AF_INET6", ErrBadSocket, domain)
}

func sockaddrString(sa unix.Sockaddr) string {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	}
	return fmt.Sprint(sa)
}
