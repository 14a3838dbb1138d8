//go:build linux

package dispatch

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrLocked reports a pin directory that another process holds.
var ErrLocked = errors.New("pinned dispatcher state is held by another process")

// LockedError is ErrLocked with the directory and the holder.
type LockedError struct {
	Dir string
	PID int // 0: the holder could not be named
}

func (e *LockedError) Error() string {
	who := "another process (its pid could not be read from /proc/locks)"
	if e.PID > 0 {
		who = "edgeproxy pid " + strconv.Itoa(e.PID)
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", e.PID)); err == nil {
			if c := strings.TrimSpace(string(comm)); c != "edgeproxy" && c != "" {
				who = fmt.Sprintf("pid %d (%s)", e.PID, c)
			}
		}
	}
	return fmt.Sprintf("pin dir %s is held by %s: one process writes the pinned state at a time; stop it first (nothing was changed)", e.Dir, who)
}

// Is makes errors.Is(err, ErrLocked) hold.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Lock is the exclusive hold on a pin directory: the one writer of the
// pinned state. It is an flock on the directory itself (a bpf filesystem
// holds no regular files), held for as long as the descriptor is open, by
// whichever process has it: a live upgrade passes File to its child
// (exec.Cmd.ExtraFiles), which takes it up with AdoptLock, so that no
// third process can take the state in between. The descriptor is
// close-on-exec otherwise.
type Lock struct {
	dir string
	f   *os.File
}

// LockPinDir takes the lock on dir, creating the directory (on a bpf
// filesystem, mounting one on /sys/fs/bpf when dir is below it) if need be.
// It does not wait: when another process holds it, the error is a
// *LockedError naming the holder's pid, and nothing else was touched.
func LockPinDir(dir string) (*Lock, error) {
	if dir == "" {
		return nil, errors.New("lock: no pin dir")
	}
	dir = filepath.Clean(dir)
	if err := ensureBPFFS(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin dir: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open pin dir: %w", err)
	}
	if err := flock(f, dir); err != nil {
		f.Close()
		return nil, err
	}
	return &Lock{dir: dir, f: f}, nil
}

// AdoptLock takes up a lock whose descriptor f a parent process passed
// down: f must be the directory dir, and this process then holds the lock
// (the same open file, so the parent's hold carries over without a gap).
func AdoptLock(f *os.File, dir string) (*Lock, error) {
	dir = filepath.Clean(dir)
	var have, want unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &have); err != nil {
		return nil, fmt.Errorf("adopt lock: %w", err)
	}
	if err := unix.Stat(dir, &want); err != nil {
		return nil, fmt.Errorf("adopt lock: %w", err)
	}
	if have.Dev != want.Dev || have.Ino != want.Ino {
		return nil, fmt.Errorf("adopt lock: descriptor %d is not the pin dir %s", f.Fd(), dir)
	}
	if err := flock(f, dir); err != nil {
		return nil, err
	}
	return &Lock{dir: dir, f: f}, nil
}

func flock(f *os.File, dir string) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return &LockedError{Dir: dir, PID: holder(f)}
		default:
			return fmt.Errorf("lock pin dir %s: %w", dir, err)
		}
	}
}

// Dir returns the locked directory.
func (l *Lock) Dir() string { return l.dir }

// File returns the lock's descriptor, to hand to a child process.
func (l *Lock) File() *os.File { return l.f }

// Close releases the lock (unless a child process still has the
// descriptor).
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// LockHolder returns the pid of the process holding an exclusive flock on
// the file or directory at path, or 0 when none can be found: for errors
// that name who holds a lock (the pin dir's, the store's).
func LockHolder(path string) int {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return holderOf(&st)
}

// holder returns the pid that holds an flock on f's inode, or 0.
func holder(f *os.File) int {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return 0
	}
	return holderOf(&st)
}

// holderOf returns the pid that holds an flock on st's inode, from
// /proc/locks, or 0. When that process is gone (it handed the descriptor
// to a child and exited), the holder is the process that has the file
// open with the lock, found in /proc/*/fdinfo.
func holderOf(st *unix.Stat_t) int {
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	pid := lockPID("/proc/locks", id)
	if pid > 0 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			return pid
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fdinfo/*")
	self := strconv.Itoa(os.Getpid())
	for _, p := range procs {
		if strings.HasPrefix(p, "/proc/"+self+"/") {
			continue
		}
		if lockPID(p, id) > 0 {
			n, _ := strconv.Atoi(strings.Split(p, "/")[2])
			return n
		}
	}
	return pid
}

// lockPID finds an exclusive FLOCK on the inode id ("maj:min:ino", as
// /proc/locks writes it) in a file of /proc/locks's format (also the
// "lock:" lines of /proc/PID/fdinfo/FD) and returns its pid, or 0.
func lockPID(path, id string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 18523 00:28:34327 0 EOF"
		fields := strings.Fields(sc.Text())
		for i := 0; i+4 < len(fields); i++ {
			if fields[i] == "FLOCK" && fields[i+2] == "WRITE" && fields[i+4] == id {
				if pid, err := strconv.Atoi(fields[i+3]); err == nil {
					return pid
				}
			}
		}
	}
	return 0
}
