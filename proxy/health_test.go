package proxy

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestPassiveEjection: failures in a row eject, for longer each time it
// keeps failing; a success resets the run.
func TestPassiveEjection(t *testing.T) {
	var h originHealth
	ph := PassiveHealth{MaxFailures: 3, Ejection: 10 * time.Second}
	now := time.Now()
	err := errors.New("refused")
	h.failed(now, err, ph)
	h.failed(now, err, ph)
	h.succeeded()
	h.failed(now, err, ph)
	if !h.usable(now) {
		t.Fatal("ejected without three failures in a row")
	}
	h.failed(now, err, ph)
	if !h.failed(now, err, ph) || h.usable(now) || h.state(now) != "ejected" {
		t.Fatal("not ejected after three failures in a row")
	}
	if !h.usable(now.Add(10 * time.Second)) {
		t.Fatal("still ejected after the ejection time")
	}
	for range 3 {
		h.failed(now, err, ph)
	}
	if h.usable(now.Add(15*time.Second)) || !h.usable(now.Add(20*time.Second)) {
		t.Fatal("a second ejection in a row does not last twice as long")
	}
}

// TestActiveHealth: thresholds in a row move the state both ways, and a
// good check ends a passive ejection.
func TestActiveHealth(t *testing.T) {
	var h originHealth
	hc := HealthCheck{Healthy: 2, Unhealthy: 3}
	now := time.Now()
	bad := errors.New("status 500")
	for i, step := range []struct {
		err     error
		changed bool
		state   string
	}{
		{bad, false, "up"}, {bad, false, "up"}, {nil, false, "up"}, {bad, false, "up"}, {bad, false, "up"},
		{bad, true, "down"}, {bad, false, "down"}, {nil, false, "down"}, {nil, true, "up"}, {nil, false, "up"},
	} {
		if changed := h.checked(now, step.err, hc); changed != step.changed || h.state(now) != step.state {
			t.Fatalf("check %d (%v): changed %v, state %s; want %v, %s", i, step.err, changed, h.state(now), step.changed, step.state)
		}
	}
	h.ejectedUntil.Store(now.Add(time.Hour).UnixNano())
	h.checked(now, bad, hc)
	h.checked(now, bad, hc)
	h.checked(now, bad, hc)
	h.checked(now, nil, hc)
	h.checked(now, nil, hc)
	if !h.usable(now) {
		t.Error("an origin whose check recovered is still ejected")
	}
}

// TestOriginsNamePoolAndSites: GET /v1/origins's list names each pool's
// origin, the pool (with the TLS settings that make it a pool of its own)
// and the sites that forward to it, a pool shared by sites once.
func TestOriginsNamePoolAndSites(t *testing.T) {
	p, err := New(Options{Config: Config{Sites: []Site{
		{Hosts: []string{"a.example", "www.a.example"}, Origins: origins("http://192.0.2.1"),
			Routes: []Route{{Path: "/api/", Origins: origins("http://192.0.2.2:8080")}}},
		{Hosts: []string{"b.example"}, Origins: origins("http://192.0.2.1:80")},
		{Hosts: []string{"c.example"}, Origins: origins("https://192.0.2.3"), OriginTLS: OriginTLS{InsecureSkipVerify: true}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.tcp.Close()
	got := map[string]OriginStatus{}
	for _, o := range p.Origins() {
		got[o.Pool] = o
	}
	want := []struct {
		pool, origin string
		sites        []string
	}{
		{"http://192.0.2.1:80", "http://192.0.2.1:80", []string{"a.example", "b.example"}},
		{"http://192.0.2.2:8080", "http://192.0.2.2:8080", []string{"a.example"}},
		{"https://192.0.2.3:443 (insecure_skip_verify)", "https://192.0.2.3:443", []string{"c.example"}},
	}
	if len(got) != len(want) {
		t.Errorf("%d pools, want %d: %+v", len(got), len(want), got)
	}
	for _, w := range want {
		o, ok := got[w.pool]
		if !ok || o.Origin != w.origin || !slices.Equal(o.Sites, w.sites) {
			t.Errorf("pool %s: %+v, want origin %s, sites %v", w.pool, o, w.origin, w.sites)
		}
	}
}
