package bindings_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// TestRecords: every item round-trips through its record; a value of a
// newer format, a malformed one, or one under the wrong key is refused,
// naming the key.
func TestRecords(t *testing.T) {
	p := bindings.NewPrefix(netip.MustParsePrefix("192.0.2.0/24"), bindings.CDN, bindings.FromAPI)
	b := bindings.NewBinding(netip.MustParsePrefix("192.0.2.8/29"), dispatch.TCP, 443, bindings.Spectrum, bindings.FromAPI)
	b.PrefixID = p.ID
	for _, r := range []bindings.Record{bindings.EncodePrefix(p), bindings.EncodeBinding(b)} {
		d, err := bindings.DecodeRecord(r.Key, r.Value)
		switch {
		case err != nil:
			t.Errorf("%s: %v", r.Key, err)
		case d.Prefix != nil && *d.Prefix != p, d.Binding != nil && *d.Binding != b:
			t.Errorf("%s: decoded %+v", r.Key, d)
		}
	}
	c := bindings.EncodeCanary(b, bindings.Canary{Service: bindings.CDN, Labels: map[string]string{"stage": "canary"}})
	if d, err := bindings.DecodeRecord(c.Key, c.Value); err != nil || d.Canary == nil || d.Canary.Service != bindings.CDN || d.Binding.Service != bindings.Spectrum {
		t.Errorf("a canary record: %+v, %v", d, err)
	}
	key := bindings.PrefixKey(p.ID)
	for value, want := range map[string]string{
		`{"v":2,"cidr":"192.0.2.0/24","service_id":"cdn"}`:  "value format 2, this binary reads formats 1 to 1",
		`{"v":1,"cidr":"192.0.2.0/24","service_id":"mail"}`: "unknown service",
		`{"v":1,"cidr":"192.0.3.0/24","service_id":"cdn"}`:  "whose key is",
		`not json`: "malformed value",
		`{"v":1,"cidr":"192.0.2.0/24","service_id":"cdn","canary":{"service_id":"spectrum","labels":{"a":"b"}}}`: "takes no canary",
	} {
		_, err := bindings.DecodeRecord(key, []byte(value))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %v, want an error naming the key and %q", value, err, want)
		}
	}
}
