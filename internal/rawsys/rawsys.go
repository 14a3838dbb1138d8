// Package rawsys makes the socket calls of the proxies' copy loops as raw
// system calls: calls on non-blocking sockets and pipes, which never wait,
// made without telling the scheduler that the goroutine entered a system
// call. Told of one, the scheduler wakes its monitor (sysmon), and the
// monitor hands the processor to another thread when a call runs long; a
// write to a local peer does, since loopback delivers inline. That costs
// futexes and thread switches at every message at moderate load, and in a
// bulk transfer most of the process's context switches.
//
// Only for non-blocking descriptors: a raw call that waited would hold its
// thread and its processor. The callers wait in the runtime's poller
// (syscall.RawConn) when a call answers EAGAIN.
package rawsys

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Err is e as an error: nil for 0 (a zero Errno in an error is not nil).
func Err(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Recv is recvfrom(fd, b, flags) without an address: the socket's own
// read, without the file layer's position lock that read(2) takes.
func Recv(fd uintptr, b []byte, flags int) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(flags), 0, 0)
	return int(n), e
}

// Send is sendto(fd, b, flags) without an address. On a stream socket
// pass MSG_NOSIGNAL, so that a peer that reset raises no SIGPIPE.
func Send(fd uintptr, b []byte, flags int) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(flags), 0, 0)
	return int(n), e
}

// Splice moves up to n bytes from in to out, one of them a pipe, without
// waiting (SPLICE_F_NONBLOCK) and moving pages where it can.
func Splice(in, out uintptr, n int) (int, syscall.Errno) {
	m, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, in, 0, out, 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return int(m), e
}

// RecvMmsg is recvmmsg(fd, hs, flags) without a timeout.
func RecvMmsg(fd uintptr, hs []unix.Mmsghdr, flags int) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(unsafe.SliceData(hs))), uintptr(len(hs)), uintptr(flags), 0, 0)
	return int(n), e
}

// SendMmsg is sendmmsg(fd, hs, flags).
func SendMmsg(fd uintptr, hs []unix.Mmsghdr, flags int) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(unsafe.SliceData(hs))), uintptr(len(hs)), uintptr(flags), 0, 0)
	return int(n), e
}
