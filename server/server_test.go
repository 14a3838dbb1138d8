package server

import (
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/cases"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// echoSockets starts named echo servers for every service label: the cdn's
// answer "cdn", spectrum's "spectrum".
func echoSockets(t *testing.T) map[string]syscall.Conn {
	t.Helper()
	return echo.Sockets(t, bindings.Labels...)
}

func writeConfig(t testing.TB, yaml string) *config.Plan {
	t.Helper()
	cfg, err := config.Load(testutil.WriteConfig(t, yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestSharedCasesThroughConfig drives every shared case from a configuration
// file through the run wiring, with named echo sockets under the service
// labels and host services on the wildcard address of every probed port:
// real TCP and UDP traffic must reach what the case wants.
func TestSharedCasesThroughConfig(t *testing.T) {
	f, err := cases.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			ns := netns.New(t)
			cfg := writeConfig(t, c.ConfigYAML(""))
			s, err := Start(Options{Config: cfg, Sockets: echoSockets(t), Dial: ns.Dial, Socket: ns.Socket})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			served := map[string]bool{}
			for _, p := range c.Probes {
				dst := netip.MustParseAddrPort(p.Dst)
				if key := fmt.Sprintf("%s/%d", p.Protocol, dst.Port()); !served[key] {
					served[key] = true
					serveHost(t, p.Protocol, dst.Port())
				}
			}
			for _, p := range c.Probes {
				dst := netip.MustParseAddrPort(p.Dst)
				got, err := echo.Ask(p.Protocol, dst, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if got == "host" {
					got = "kernel"
				}
				if got != p.Want {
					t.Errorf("%s %s: %s answered, want %s", p.Protocol, dst, got, p.Want)
				}
			}
		})
	}
}

func serveHost(t *testing.T, proto string, port uint16) {
	t.Helper()
	addr := fmt.Sprintf("[::]:%d", port)
	if proto == "tcp" {
		echo.StartTCP(t, "host", addr, false)
		return
	}
	echo.StartUDP(t, "host", addr)
}

// TestStartWithoutSocketsFailsClosed: a service label without a socket
// drops its traffic; nothing reaches a host listener.
func TestStartWithoutSocketsFailsClosed(t *testing.T) {
	ns := netns.New(t)
	cfg := writeConfig(t, "dispatch: {pin_dir: \"\"}\nprefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n")
	s, err := Start(Options{Config: cfg, Sockets: map[string]syscall.Conn{"cdn/tcp": nil, "cdn/udp": nil}, Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	serveHost(t, "tcp", 443)
	if got, _ := echo.Ask("tcp", netip.MustParseAddrPort("192.0.2.1:443"), 2*time.Second); got != echo.Refused {
		t.Fatalf("got %s, want refused", got)
	}
	c, err := s.Dispatcher().Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c["cdn/tcp"].Misses == 0 {
		t.Fatalf("no miss counted: %+v", c)
	}
}
