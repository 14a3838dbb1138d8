package server

import (
	"bufio"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// TestBindingTraffic: the data plane's per-binding counts reach the API
// (a binding's traffic, a plan's rows) and /metrics (the top bindings).
func TestBindingTraffic(t *testing.T) {
	_, api := startWithAPI(t, "")
	pid := api.must("POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"cdn"}`)
	bid := api.must("POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"192.0.2.128/25","service_id":"spectrum"}`)
	for range 3 {
		askTCP(t, "192.0.2.200:443") // spectrum's app: steered
	}
	// Refused: the cdn serves no tcp/7 (the default binding's).
	if c, err := net.DialTimeout("tcp", "192.0.2.1:7", time.Second); err == nil {
		c.Close()
		t.Fatal("tcp/7 of a cdn address was answered")
	}

	var b admin.Binding
	_, res := api.do("GET", "/v1/prefixes/"+pid+"/bindings/"+bid, "")
	if err := json.Unmarshal(res, &b); err != nil || b.Traffic == nil {
		t.Fatalf("binding %s: %v", res, err)
	}
	if tr := b.Traffic; tr.Total.Steered != 3 || tr.Total.Refused != 0 || tr.Recent.Steered != 3 {
		t.Errorf("the binding's traffic %+v, want 3 steered, recently too", tr)
	}
	var list []admin.Binding
	_, res = api.do("GET", "/v1/prefixes/"+pid+"/bindings", "")
	if err := json.Unmarshal(res, &list); err != nil || len(list) != 2 || list[0].Traffic == nil || list[0].Traffic.Total.Refused != 1 {
		t.Fatalf("the default binding's traffic: %s", res)
	}

	// The plan of moving the binding back says what it carries.
	_, res = api.do("PATCH", "/v1/prefixes/"+pid+"/bindings/"+bid+"?dry_run=true", `{"service_id":"cdn"}`)
	var p admin.Plan
	if err := json.Unmarshal(res, &p); err != nil || len(p.Rows) == 0 {
		t.Fatalf("plan %s: %v", res, err)
	}
	for _, r := range p.Rows {
		if r.Before.BindingID != bid || r.Traffic == nil || r.Traffic.Recent.Steered != 3 {
			t.Errorf("row %+v: want the binding's 3 recent connections", r)
		}
	}

	resp, err := api.HTTP.Get(api.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := new(strings.Builder)
	bufio.NewReader(resp.Body).WriteTo(body)
	resp.Body.Close()
	for _, want := range []string{
		`edgeproxy_binding_traffic_total{binding_id="` + bid + `",cidr="192.0.2.128/25",outcome="steered",scope="*",service="spectrum"} 3`,
		`edgeproxy_binding_traffic_total{binding_id="` + list[0].ID + `",cidr="192.0.2.0/24",outcome="refused",scope="*",service="cdn"} 1`,
		`edgeproxy_bindings_counted 2`,
	} {
		if !strings.Contains(body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestTrafficWindow: the recent counts are the growth since the sample at
// the window's start; a binding whose counters began again counts from
// zero.
func TestTrafficWindow(t *testing.T) {
	k := dispatch.BindingKey{Prefix: netip.MustParsePrefix("192.0.2.0/24")}
	var counts dispatch.BindingCount
	tr := &traffic{read: func() (map[dispatch.BindingKey]dispatch.BindingCount, error) {
		return map[dispatch.BindingKey]dispatch.BindingCount{k: counts}, nil
	}}
	t0 := time.Now().Add(-10 * time.Minute)
	for i, n := range []uint64{5, 8, 20, 50} { // at 0, 3, 6 and 9 minutes
		counts.Steered = n
		tr.sample(t0.Add(time.Duration(3*i) * time.Minute))
	}
	// The window (5 minutes before 9) starts after the sample at 3.
	if len(tr.samples) != 3 || tr.samples[0].counts[k].Steered != 8 {
		t.Fatalf("samples kept: %+v", tr.samples)
	}
	counts.Steered = 51
	b := bindings.Binding{CIDR: k.Prefix}
	total, recent, window, ok := tr.of(b)
	if !ok || total.Steered != 51 || recent.Steered != 43 || window < 7*time.Minute {
		t.Errorf("total %+v, recent %+v over %s", total, recent, window)
	}
	counts.Steered = 2       // removed and made again
	tr.last.at = time.Time{} // the cached read is old
	if _, recent, _, _ := tr.of(b); recent.Steered != 2 {
		t.Errorf("after the counters began again: recent %+v", recent)
	}
}
