package store

import (
	"fmt"

	"github.com/edgeproxy/edgeproxy/dispatch"
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
// the pid holding it when /proc tells.
func inUse(path string) error {
	return &InUseError{Path: path, PID: dispatch.LockHolder(path)}
}
