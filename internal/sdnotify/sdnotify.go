// Package sdnotify speaks systemd's notify protocol (sd_notify(3)): the
// service's state changes, one datagram each, to the socket that
// $NOTIFY_SOCKET names. Without that variable (not started by systemd) it
// sends nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Send sends the assignments (READY=1, STATUS=..., ...) in one datagram.
func Send(assignments ...string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] == '@' {
		name = "\x00" + name[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(assignments, "\n") + "\n")); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready says the service serves; pid is its main process.
func Ready(status string) error {
	return Send("READY=1", "MAINPID="+strconv.Itoa(os.Getpid()), "STATUS="+status)
}

// Reloading says a reload began (systemd's Type=notify-reload wants the
// monotonic clock with it); Ready follows when it is done.
func Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return err
	}
	return Send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatInt(ts.Nano()/1000, 10))
}

// Stopping says the service drains and will exit.
func Stopping(status string) error { return Send("STOPPING=1", "STATUS="+status) }
