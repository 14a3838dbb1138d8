package proxy

import (
	"errors"
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
