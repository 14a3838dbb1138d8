package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestOpenAccessLog: "off" is none, a file that cannot be opened is an
// error naming the key.
func TestOpenAccessLog(t *testing.T) {
	log, closer, err := openAccessLog("off", "n")
	if log != nil || closer != nil || err != nil {
		t.Errorf(`"off": %v %v %v, want nothing`, log, closer, err)
	}
	_, _, err = openAccessLog(filepath.Join(t.TempDir(), "no", "such", "dir", "access.log"), "n")
	if err == nil || !strings.HasPrefix(err.Error(), "cdn.access_log: ") {
		t.Errorf("a file in a missing directory: %v, want an error naming cdn.access_log", err)
	}
}

// TestAccessLogAcrossReload: the access log file keeps its lines across a
// reload, and Close writes them all and closes the file.
func TestAccessLogAcrossReload(t *testing.T) {
	ns := netns.New(t)
	path := filepath.Join(t.TempDir(), "access.log")
	conf := func(origin string) string {
		return fmt.Sprintf(`node: edge-7
dispatch: {pin_dir: ""}
store: {path: ""}
admin: {listen: "127.0.0.1:0"}
cdn: {http_ports: [80], https_ports: [], http3: false, access_log: %q, sites: [{hosts: [a.example], origins: [%q]}]}
prefixes:
  - {cidr: 192.0.2.0/24, service: cdn}
`, path, origin)
	}
	s, err := Start(Options{Config: writeConfig(t, conf("http://127.0.0.1:1")), Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	get := func(target string) string {
		c, err := net.Dial("tcp", "192.0.2.1:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n", target)
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return line
	}
	if got := get("/before"); !strings.HasPrefix(got, "HTTP/1.1 502") {
		t.Fatalf("to a closed origin port: %q, want 502", got)
	}
	if err := s.Reload(writeConfig(t, conf("http://127.0.0.1:2"))); err != nil {
		t.Fatal(err)
	}
	if got := get("/after"); !strings.HasPrefix(got, "HTTP/1.1 502") {
		t.Fatalf("after the reload: %q, want 502", got)
	}
	closed = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines after Close, want 2:\n%s", len(lines), data)
	}
	for i, want := range []struct{ path, upstream string }{{"/before", "127.0.0.1:1"}, {"/after", "127.0.0.1:2"}} {
		var l struct {
			Node, Path, Upstream string
			Status               int
			DurationS            *float64 `json:"duration_s"`
		}
		if err := json.Unmarshal([]byte(lines[i]), &l); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, lines[i])
		}
		if l.Node != "edge-7" || l.Path != want.path || l.Status != 502 || !strings.Contains(l.Upstream, want.upstream) || l.DurationS == nil {
			t.Errorf("line %d: %s; want node edge-7, path %s, status 502, upstream %s", i, lines[i], want.path, want.upstream)
		}
	}
}

// pieces records each write.
type pieces [][]byte

func (p *pieces) Write(b []byte) (int, error) {
	*p = append(*p, bytes.Clone(b))
	return len(b), nil
}

// TestPipeWriter: a batch reaches a pipe in whole lines of at most
// PIPE_BUF bytes a write, but for a line that is longer alone.
func TestPipeWriter(t *testing.T) {
	var batch []byte
	for i := range 400 {
		batch = fmt.Appendf(batch, "{\"n\":%d,\"path\":%q}\n", i, strings.Repeat("p", i%97))
	}
	long := "{\"path\":\"" + strings.Repeat("l", 3*pipeBuf) + "\"}\n"
	batch = append(batch, long...)
	batch = append(batch, "{\"last\":1}\n"...)
	var got pieces
	if n, err := (pipeWriter{&got}).Write(batch); n != len(batch) || err != nil {
		t.Fatalf("wrote %d of %d: %v", n, len(batch), err)
	}
	if joined := bytes.Join(got, nil); !bytes.Equal(joined, batch) {
		t.Fatal("the pieces do not make the batch")
	}
	sawLong := false
	for _, p := range got {
		if !bytes.HasSuffix(p, []byte("\n")) {
			t.Errorf("a piece ends inside a line: %q", p[max(0, len(p)-20):])
		}
		if len(p) > pipeBuf {
			if string(p) != long {
				t.Errorf("a %d-byte piece is not the one long line", len(p))
			}
			sawLong = true
		}
	}
	if !sawLong || len(got) < len(batch)/pipeBuf {
		t.Errorf("%d pieces for %d bytes (long line alone: %v)", len(got), len(batch), sawLong)
	}
}
