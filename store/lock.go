package store

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// InUseError reports a store whose file lock another process holds (a
// running node): PID is that process, 0 when it cannot be found.
type InUseError struct {
	Path string
	PID  int
}

func (e *InUseError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("store %s is in use by another process", e.Path)
	}
	return fmt.Sprintf("store %s is in use by pid %d", e.Path, e.PID)
}

// inUse returns the error of a store whose lock could not be taken, with
// the pid holding it when /proc/locks tells.
func inUse(path string) error {
	return &InUseError{Path: path, PID: lockHolder(path, "/proc/locks")}
}

// lockHolder returns the pid of the flock on path's file that locks lists
// (the format of /proc/locks), or 0.
func lockHolder(path, locks string) int {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	f, err := os.Open(locks)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; a waiter's
		// line has "->" after the number.
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}
