package rawsys

import (
	"bytes"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func pair(t *testing.T, typ int) (a, b uintptr) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return uintptr(fds[0]), uintptr(fds[1])
}

// TestRecvSend: bytes sent arrive, a peek leaves them, an empty socket
// answers EAGAIN without waiting, and a peer gone answers EPIPE with
// MSG_NOSIGNAL (no SIGPIPE kills the test).
func TestRecvSend(t *testing.T) {
	a, b := pair(t, unix.SOCK_STREAM)
	buf := make([]byte, 16)
	if _, e := Recv(b, buf, 0); e != syscall.EAGAIN {
		t.Fatalf("Recv on an empty socket: %v, want EAGAIN", e)
	}
	if n, e := Send(a, []byte("hello"), unix.MSG_NOSIGNAL); n != 5 || e != 0 {
		t.Fatalf("Send = %d, %v", n, e)
	}
	if n, e := Recv(b, buf[:1], unix.MSG_PEEK|unix.MSG_DONTWAIT); n != 1 || e != 0 || buf[0] != 'h' {
		t.Fatalf("peek = %d, %v, %q", n, e, buf[:1])
	}
	if n, e := Recv(b, buf, 0); n != 5 || e != 0 || string(buf[:n]) != "hello" {
		t.Fatalf("Recv = %d, %v, %q", n, e, buf[:max(n, 0)])
	}
	unix.Close(int(b))
	if _, e := Send(a, []byte("x"), unix.MSG_NOSIGNAL); e != syscall.EPIPE && e != syscall.ECONNRESET {
		t.Fatalf("Send to a closed peer: %v, want EPIPE or ECONNRESET", e)
	}
}

// TestSplice moves bytes socket to pipe to socket; an empty source
// answers EAGAIN.
func TestSplice(t *testing.T) {
	a, b := pair(t, unix.SOCK_STREAM)
	c, d := pair(t, unix.SOCK_STREAM)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, e := Splice(b, uintptr(p[1]), 1<<16); e != syscall.EAGAIN {
		t.Fatalf("Splice from an empty socket: %v, want EAGAIN", e)
	}
	msg := bytes.Repeat([]byte("spliced "), 1000)
	if n, e := Send(a, msg, unix.MSG_NOSIGNAL); n != len(msg) || e != 0 {
		t.Fatalf("Send = %d, %v", n, e)
	}
	in, e := Splice(b, uintptr(p[1]), 1<<16)
	if e != 0 || in != len(msg) {
		t.Fatalf("Splice in = %d, %v: want %d", in, e, len(msg))
	}
	if out, e := Splice(uintptr(p[0]), c, in); e != 0 || out != in {
		t.Fatalf("Splice out = %d, %v: want %d", out, e, in)
	}
	got := make([]byte, 2*len(msg))
	if n, e := Recv(d, got, 0); e != 0 || !bytes.Equal(got[:n], msg) {
		t.Fatalf("Recv after the splices = %d bytes, %v", n, e)
	}
}

// TestMmsg sends two datagrams in one sendmmsg and reads both in one
// recvmmsg, each with its own length.
func TestMmsg(t *testing.T) {
	a, b := pair(t, unix.SOCK_DGRAM)
	bufs := [][]byte{[]byte("one"), []byte("second")}
	hs := make([]unix.Mmsghdr, 2)
	iovs := make([]unix.Iovec, 2)
	for i := range hs {
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(len(bufs[i]))
		hs[i].Hdr.Iov = &iovs[i]
		hs[i].Hdr.SetIovlen(1)
	}
	if n, e := SendMmsg(a, hs, 0); n != 2 || e != 0 {
		t.Fatalf("SendMmsg = %d, %v", n, e)
	}
	in := [][]byte{make([]byte, 16), make([]byte, 16), make([]byte, 16)}
	rhs := make([]unix.Mmsghdr, 3)
	riovs := make([]unix.Iovec, 3)
	for i := range rhs {
		riovs[i].Base = &in[i][0]
		riovs[i].SetLen(16)
		rhs[i].Hdr.Iov = &riovs[i]
		rhs[i].Hdr.SetIovlen(1)
	}
	n, e := RecvMmsg(b, rhs, unix.MSG_DONTWAIT)
	if n != 2 || e != 0 {
		t.Fatalf("RecvMmsg = %d, %v: want 2", n, e)
	}
	for i, want := range bufs {
		if got := in[i][:rhs[i].Len]; !bytes.Equal(got, want) {
			t.Errorf("datagram %d = %q, want %q", i, got, want)
		}
	}
	if _, e := RecvMmsg(b, rhs, unix.MSG_DONTWAIT); e != syscall.EAGAIN {
		t.Errorf("RecvMmsg on an empty socket: %v, want EAGAIN", e)
	}
}

// TestErr: a zero Errno is no error, any other is itself.
func TestErr(t *testing.T) {
	if err := Err(0); err != nil {
		t.Errorf("Err(0) = %v, want nil", err)
	}
	if err := Err(syscall.EAGAIN); err != syscall.EAGAIN {
		t.Errorf("Err(EAGAIN) = %v", err)
	}
}
