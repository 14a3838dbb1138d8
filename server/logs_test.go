package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// TestAuditLineNotHTMLEscaped: the audit line writes a change's text as
// the API does, "<" and "&" as they are.
func TestAuditLineNotHTMLEscaped(t *testing.T) {
	var b bytes.Buffer
	s := &Server{log: slog.New(slog.NewJSONHandler(&b, nil))}
	s.auditLine(bindings.AuditEntry{Who: "token:abc", Action: "move", RequestID: "<job&1>"})
	if line := b.String(); !strings.Contains(line, `"request_id":"<job&1>"`) || strings.Contains(line, `\u003c`) {
		t.Errorf("audit line %s", line)
	}
}
