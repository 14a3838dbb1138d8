package scenarios

import "testing"

func TestChangeMoveTiny(t *testing.T) {
	r := dispRunTiny(t, "change-move", true)
	if r.Summary["edgeproxy"]["moves"] == 0 {
		t.Errorf("no moves: %v", r.Summary)
	}
}

func TestChangeReloadTiny(t *testing.T) {
	r := dispRunTiny(t, "change-reload", true)
	if r.Summary["edgeproxy"]["reloads_ok"] == 0 {
		t.Errorf("no reloads: %v", r.Summary)
	}
}

func TestChangeLatencyTiny(t *testing.T) { dispRunTiny(t, "change-latency", true) }
func TestChangeBatchTiny(t *testing.T)   { dispRunTiny(t, "change-batch", true) }

func TestChangeUpgradeTiny(t *testing.T) {
	r := dispRunTiny(t, "change-upgrade", true)
	if r.Summary["edgeproxy"]["upgrades"] == 0 {
		t.Errorf("no upgrades: %v", r.Summary)
	}
}
