package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/edgeproxy/edgeproxy/proxy"
)

// accessLogFile closes the access log, then its file.
type accessLogFile struct {
	log *proxy.AccessLog
	f   *os.File // nil for stderr
}

func (a accessLogFile) Close() error {
	err := a.log.Close()
	if a.f != nil {
		err = errors.Join(err, a.f.Close())
	}
	return err
}

// openAccessLog returns the access log of cdn.access_log: "stderr", a file
// path, or nil for "off". Lines are written in batches (proxy.AccessLog):
// at most 100 ms late or when 64 KiB wait, so that the access log does not
// cost a write system call per request (nginx's access_log buffer=). The
// closer writes what waits and closes the file.
func openAccessLog(where string, node string) (*proxy.AccessLog, io.Closer, error) {
	var f *os.File
	var w io.Writer
	switch where {
	case "off":
		return nil, nil, nil
	case "stderr", "":
		w = os.Stderr
		if fi, err := os.Stderr.Stat(); err != nil || !fi.Mode().IsRegular() {
			w = pipeWriter{w}
		}
	default:
		var err error
		f, err = os.OpenFile(where, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("cdn.access_log: %w", err)
		}
		w = f
	}
	log := proxy.NewAccessLog(w, node)
	return log, accessLogFile{log: log, f: f}, nil
}

// pipeBuf is the largest write a pipe takes whole (PIPE_BUF).
const pipeBuf = 4096

// pipeWriter writes a batch to a pipe (or a terminal, a socket) in pieces
// of at most PIPE_BUF bytes that end at a line's end. The kernel writes
// each whole, so the process's own log lines, written to the same stderr
// by other goroutines, land between access log lines, never inside one.
type pipeWriter struct{ w io.Writer }

func (p pipeWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := len(b)
		if k > pipeBuf {
			if k = bytes.LastIndexByte(b[:pipeBuf], '\n') + 1; k == 0 {
				// A line longer than PIPE_BUF: whole, if not atomically.
				if k = bytes.IndexByte(b, '\n') + 1; k == 0 {
					k = len(b)
				}
			}
		}
		m, err := p.w.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}
