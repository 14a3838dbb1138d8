package server

import (
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
