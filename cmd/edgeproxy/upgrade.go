package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/sdnotify"
	"github.com/edgeproxy/edgeproxy/server"
)

// A live upgrade (SIGUSR2): the running process starts the binary at its
// own path again, as its child, with the same arguments. The child is
// handed three descriptors and nothing else: a private channel (a socket
// pair), the dispatcher's link and the pin dir's lock. Serving sockets are
// never passed: the child makes its own, and the kernel keeps established
// connections with the process that accepted them. The conversation, one
// JSON message a line:
//
//	parent → child  {"restart_only": {...}, "generation": N}
//	child  → parent {"writer": true}       prepared: may I write?
//	parent → child  {"granted": true}      the parent holds its changes
//	child  → parent {"ready": PID}         the child serves the node
//	parent → child  {"confirmed": true}    the parent drains: no way back
//	child  → parent {"failed": "why"}      at any point before ready
//
// Until ready, the parent can take every phase back: a child that fails
// or dies, or is not ready within upgradeBound, leaves the node with the
// parent (server.UpgradeFailed), and the log says why.

// upgradeEnv carries, to the child, that it is one: the value is "lock"
// when the third descriptor is the pin dir's lock.
const upgradeEnv = "EDGEPROXY_UPGRADE"

// The descriptors of the child, in exec.Cmd.ExtraFiles order.
const (
	upgradeChanFD = 3
	upgradeLinkFD = 4
	upgradeLockFD = 5
)

// upgradeBound is how long the child has, from its start, to be ready.
const upgradeBound = 10 * time.Second

// upgradeMsg is one message of the conversation.
type upgradeMsg struct {
	RestartOnly map[string]string `json:"restart_only,omitempty"`
	Generation  int               `json:"generation,omitempty"`
	Writer      bool              `json:"writer,omitempty"`
	Granted     bool              `json:"granted,omitempty"`
	Ready       int               `json:"ready,omitempty"`
	Confirmed   bool              `json:"confirmed,omitempty"`
	Failed      string            `json:"failed,omitempty"`
}

// upgradeChan is one end of the conversation.
type upgradeChan struct {
	c  net.Conn
	rd *bufio.Reader
}

func newUpgradeChan(f *os.File) (*upgradeChan, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	return &upgradeChan{c: c, rd: bufio.NewReader(c)}, nil
}

func (u *upgradeChan) send(m upgradeMsg) error {
	b, _ := json.Marshal(m)
	u.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := u.c.Write(append(b, '\n'))
	return err
}

// recv reads the next message, waiting until deadline.
func (u *upgradeChan) recv(deadline time.Time) (upgradeMsg, error) {
	var m upgradeMsg
	u.c.SetReadDeadline(deadline)
	line, err := u.rd.ReadBytes('\n')
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("a message that is not JSON: %q", line)
	}
	return m, nil
}

func (u *upgradeChan) Close() error { return u.c.Close() }

// upgradeResult is how an upgrade the parent started ended.
type upgradeResult struct {
	child int   // its pid; 0 when none started
	err   error // nil: the child serves, this process drains
}

// upgrade runs the parent's side of a live upgrade and returns how it
// ended. exe is the binary's path as the process started (the file there
// now is what runs: a package upgrade takes effect).
func upgrade(s *server.Server, cfg *config.Plan, exe string, log *slog.Logger) upgradeResult {
	start := time.Now()
	if !s.BeginUpgrade() {
		return upgradeResult{err: errors.New("an upgrade is already under way, or the process is draining")}
	}
	notify(log, sdnotify.Send("STATUS=upgrading: starting "+exe))
	res, hadWriter := startChild(s, cfg, exe, log, start)
	if res.err == nil {
		s.HandedOver()
		log.Info("upgraded: the new process serves the node; this one drains", "child", res.child, "took_s", time.Since(start).Round(time.Millisecond).Seconds())
		return res
	}
	if err := s.UpgradeFailed(res.err, hadWriter); err != nil {
		log.Error("upgrade failed, and taking the data plane back failed too", "child", res.child, "error", res.err, "takeback", err)
		return res
	}
	log.Error("upgrade failed: this process serves on", "child", res.child, "error", res.err, "after_s", time.Since(start).Round(time.Millisecond).Seconds())
	notify(log, sdnotify.Ready("serving (the last upgrade failed)"))
	return res
}

// startChild starts the new process and talks it through the phases. It
// says whether the child had the writer role (then a failure must take the
// data plane back).
func startChild(s *server.Server, cfg *config.Plan, exe string, log *slog.Logger, start time.Time) (res upgradeResult, hadWriter bool) {
	lock, link, err := s.HandOn()
	if err != nil {
		return upgradeResult{err: err}, false
	}
	defer link.Close()
	if lock != nil {
		defer lock.Close()
	}
	cmd, mine, err := spawnChild(exe, lock, link)
	if err != nil {
		return upgradeResult{err: err}, false
	}
	child := cmd.Process.Pid
	log.Info("upgrade: the new process started", "child", child, "binary", exe)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ch, err := newUpgradeChan(mine)
	if err != nil {
		cmd.Process.Kill()
		<-exited
		return upgradeResult{child: child, err: err}, false
	}
	defer ch.Close()

	// The conversation runs here; the child's exit is watched beside it.
	deadline := start.Add(upgradeBound)
	failed := "" // what the child said, if it said why
	ended := func(why error) (upgradeResult, bool) {
		// The child is gone or must go: make sure of it before the data
		// plane is taken back.
		select {
		case werr := <-exited:
			if failed != "" {
				why = fmt.Errorf("the new process failed (%v): %s", werr, failed)
			} else if why == nil {
				why = fmt.Errorf("the new process exited before it was ready: %v", werr)
			}
		case <-time.After(500 * time.Millisecond):
			cmd.Process.Kill()
			werr := <-exited
			if why == nil {
				why = fmt.Errorf("the new process was killed: %v", werr)
			}
		}
		return upgradeResult{child: child, err: why}, hadWriter
	}
	if err := ch.send(upgradeMsg{RestartOnly: server.RestartOnly(cfg), Generation: s.Generation() + 1}); err != nil {
		return ended(nil)
	}
	for {
		m, err := ch.recv(deadline)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			cmd.Process.Kill()
			return ended(fmt.Errorf("the new process was not ready within %s: killed", upgradeBound))
		case err != nil:
			return ended(nil) // it closed the channel: it exited
		case m.Failed != "":
			failed = m.Failed
		case m.Writer:
			if err := s.GiveWriterRole(); err != nil {
				// The new process's open of the store then fails, naming
				// this process: the upgrade fails and this one serves on.
				log.Error("upgrade: giving the store up", "error", err)
			}
			hadWriter = true
			log.Info("upgrade: the new process has the writer role; binding changes are held", "child", child, "after_s", time.Since(start).Round(time.Millisecond).Seconds())
			if err := ch.send(upgradeMsg{Granted: true}); err != nil {
				return ended(nil)
			}
		case m.Ready != 0:
			if err := ch.send(upgradeMsg{Confirmed: true}); err != nil {
				return ended(nil)
			}
			cmd.Process.Release()
			return upgradeResult{child: child}, hadWriter
		}
	}
}

// spawnChild starts exe with this process's arguments as the new process
// of an upgrade, handing it its end of a socket pair, the link and the
// pin dir's lock (if any); mine is this process's end.
func spawnChild(exe string, lock, link *os.File) (cmd *exec.Cmd, mine *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socket pair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "upgrade"), os.NewFile(uintptr(fds[1]), "upgrade-child")
	cmd = exec.Command(exe, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{theirs, link}
	env := upgradeEnv + "=1"
	if lock != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, lock)
		env = upgradeEnv + "=lock"
	}
	cmd.Env = append(withoutEnv(os.Environ(), upgradeEnv), env)
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		mine.Close()
		return nil, nil, fmt.Errorf("start %s: %w", exe, err)
	}
	return cmd, mine, nil
}

// withoutEnv returns env without the variable name.
func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// upgradeChild is the child's side: set up from the descriptors and the
// parent's first message when this process is a live upgrade's child, nil
// otherwise.
type upgradeChild struct {
	ch          *upgradeChan
	link, lock  *os.File
	restartOnly map[string]string
	generation  int
}

// childOfUpgrade returns the child's side when the environment says this
// process is one. It reads the parent's first message.
func childOfUpgrade() (*upgradeChild, error) {
	v := os.Getenv(upgradeEnv)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(upgradeEnv)
	ch, err := newUpgradeChan(os.NewFile(upgradeChanFD, "upgrade"))
	if err != nil {
		return nil, fmt.Errorf("upgrade: the channel to the running process: %w", err)
	}
	u := &upgradeChild{ch: ch, link: os.NewFile(upgradeLinkFD, "edgeproxy-link")}
	if v == "lock" {
		u.lock = os.NewFile(upgradeLockFD, "edgeproxy-lock")
	}
	for _, f := range []*os.File{u.link, u.lock} {
		if f != nil {
			unix.CloseOnExec(int(f.Fd()))
		}
	}
	m, err := ch.recv(time.Now().Add(5 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("upgrade: the running process's first message: %w", err)
	}
	u.restartOnly, u.generation = m.RestartOnly, m.Generation
	return u, nil
}

// handover returns what server.Start needs from the child's side.
func (u *upgradeChild) handover() *server.Handover {
	return &server.Handover{
		Lock: u.lock, Link: u.link, RestartOnly: u.restartOnly, Generation: u.generation,
		WriterRole: func() error {
			if err := u.ch.send(upgradeMsg{Writer: true}); err != nil {
				return err
			}
			m, err := u.ch.recv(time.Now().Add(upgradeBound))
			if err != nil {
				return fmt.Errorf("no answer from the running process: %w", err)
			}
			if !m.Granted {
				return errors.New("the running process did not grant it")
			}
			pauseAt("writer")
			return nil
		},
	}
}

// fail tells the parent why this child gives up (it exits next).
func (u *upgradeChild) fail(err error) {
	u.ch.send(upgradeMsg{Failed: err.Error()})
}

// ready tells the parent the child serves and waits for its confirmation.
// A parent that is gone confirms too: it cannot take anything back.
func (u *upgradeChild) ready() error {
	defer u.ch.Close()
	pauseAt("ready")
	if err := u.ch.send(upgradeMsg{Ready: os.Getpid()}); err != nil {
		return nil // the parent is gone
	}
	m, err := u.ch.recv(time.Now().Add(upgradeBound))
	if err == nil && !m.Confirmed {
		return errors.New("the running process did not confirm the handover")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("the running process did not confirm the handover in time")
	}
	return nil
}

// pauseEnv names a point of the child's phases at which it stops for a
// minute ("writer": just after it took the writer role; "ready": its
// program swapped in, just before it says it is ready), so that a test
// can kill it there. Never set in production.
const pauseEnv = "EDGEPROXY_UPGRADE_PAUSE"

func pauseAt(point string) {
	if os.Getenv(pauseEnv) == point {
		time.Sleep(time.Minute)
	}
}
