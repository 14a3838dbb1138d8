// Package testutil holds the helpers tests share: a buffer a child
// process's output may be written to while a test reads it.
package testutil

import (
	"bytes"
	"sync"
)

// Buffer is safe for one writer and many readers at once: os/exec copies
// a child's output into it from its own goroutine while the test reads.
type Buffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what has been written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
