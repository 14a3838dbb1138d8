package server

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// bufferedLog collects log lines and writes them in batches, at most 100 ms
// late or when 64 KiB are waiting, so that the access log does not cost a
// write system call per request (nginx's access_log buffer=).
type bufferedLog struct {
	w io.Writer

	mu   sync.Mutex // guards buf
	buf  []byte
	stop chan struct{}
	done chan struct{}
}

const logBufferSize = 64 << 10

func newBufferedLog(w io.Writer) *bufferedLog {
	b := &bufferedLog{w: w, buf: make([]byte, 0, logBufferSize), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

// Write takes whole lines (slog writes one record per call).
func (b *bufferedLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf = append(b.buf, p...)
	full := len(b.buf) >= logBufferSize
	var out []byte
	if full {
		out, b.buf = b.buf, make([]byte, 0, logBufferSize)
	}
	b.mu.Unlock()
	if out != nil {
		b.w.Write(out)
	}
	return len(p), nil
}

func (b *bufferedLog) flush() {
	b.mu.Lock()
	out := b.buf
	b.buf = make([]byte, 0, logBufferSize)
	b.mu.Unlock()
	if len(out) > 0 {
		b.w.Write(out)
	}
}

func (b *bufferedLog) loop() {
	defer close(b.done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.flush()
		case <-b.stop:
			b.flush()
			return
		}
	}
}

// Close writes what is waiting and stops.
func (b *bufferedLog) Close() error {
	close(b.stop)
	<-b.done
	if c, ok := b.w.(io.Closer); ok && b.w != os.Stderr {
		return c.Close()
	}
	return nil
}

// openAccessLog returns the access logger of cdn.access_log: "stderr", a
// file path, or nil for "off".
func openAccessLog(where string, node string) (*slog.Logger, io.Closer, error) {
	var w io.Writer
	switch where {
	case "off":
		return nil, nil, nil
	case "stderr", "":
		w = os.Stderr
	default:
		f, err := os.OpenFile(where, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("cdn.access_log: %w", err)
		}
		w = f
	}
	b := newBufferedLog(w)
	log := slog.New(slog.NewJSONHandler(b, nil)).With("log", "access")
	if node != "" {
		log = log.With("node", node)
	}
	return log, b, nil
}
