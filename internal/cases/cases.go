// Package cases holds the worked examples of binding semantics that every
// layer's tests share, and decodes them. bindings.yaml, embedded here, is
// their source of truth: the cases live in this repository and nowhere else
// (docs/design.md, "The shared cases").
package cases

import (
	"bytes"
	_ "embed"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

//go:embed bindings.yaml
var raw []byte

// Raw returns the YAML text of the cases.
func Raw() []byte { return raw }

// File is the whole cases file.
type File struct {
	Cases   []Case    `yaml:"cases"`
	Invalid []Invalid `yaml:"invalid"`
}

// Case is one worked example: a state and probes with the outcome every layer
// must agree on.
type Case struct {
	Name         string  `yaml:"name"`
	Prefixes     []Item  `yaml:"prefixes"`
	Bindings     []Item  `yaml:"bindings"`
	SpectrumApps []App   `yaml:"spectrum_apps"`
	Probes       []Probe `yaml:"probes"`
}

// Item is a prefix or a binding.
type Item struct {
	CIDR     string `yaml:"cidr"`
	Service  string `yaml:"service"`
	Protocol string `yaml:"protocol"`
	Port     int    `yaml:"port"`
}

// App is a spectrum application.
type App struct {
	Name     string `yaml:"name"`
	Protocol string `yaml:"protocol"`
	Edge     string `yaml:"edge"`
	Ports    string `yaml:"ports"`
}

// Probe is a destination and the outcome wanted: cdn, spectrum, refuse or
// kernel.
type Probe struct {
	Dst      string `yaml:"dst"`
	Protocol string `yaml:"protocol"`
	Want     string `yaml:"want"`
}

// Invalid is a state that must be refused.
type Invalid struct {
	Why      string `yaml:"why"`
	Prefixes []Item `yaml:"prefixes"`
	Bindings []Item `yaml:"bindings"`
}

// Load decodes the embedded cases strictly.
func Load() (*File, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode cases: %w", err)
	}
	return &f, nil
}

// CDNPorts are the ports the cdn serves in every case.
var CDNPorts = []struct {
	Protocol string
	Port     uint16
}{{"tcp", 80}, {"tcp", 443}, {"udp", 443}}

// ConfigYAML returns an edgeproxy configuration file declaring the case's
// prefixes, bindings and spectrum apps, with the cdn on its default ports, an
// unpinned dispatcher, and extra appended verbatim.
func (c Case) ConfigYAML(extra string) string {
	var b strings.Builder
	b.WriteString("dispatch:\n  pin_dir: \"\"\nstore:\n  path: \"\"\n")
	b.WriteString("cdn:\n  http_ports: [80]\n  https_ports: [443]\n  http3: true\n  http3_port: 443\n")
	writeItems(&b, "prefixes", c.Prefixes)
	writeItems(&b, "bindings", c.Bindings)
	if len(c.SpectrumApps) > 0 {
		b.WriteString("spectrum:\n  apps:\n")
		for _, a := range c.SpectrumApps {
			fmt.Fprintf(&b, "    - {name: %q, protocol: %s, edge: %q, ports: %q, origins: [\"127.0.0.1:9\"]}\n", a.Name, a.Protocol, a.Edge, a.Ports)
		}
	}
	b.WriteString(extra)
	return b.String()
}

func writeItems(b *strings.Builder, key string, items []Item) {
	if len(items) == 0 {
		return
	}
	fmt.Fprintf(b, "%s:\n", key)
	for _, it := range items {
		fmt.Fprintf(b, "  - {cidr: %q, service: %q", it.CIDR, it.Service)
		if it.Protocol != "" {
			fmt.Fprintf(b, ", protocol: %s, port: %d", it.Protocol, it.Port)
		}
		b.WriteString("}\n")
	}
}

// ConfigYAML returns a configuration file declaring the invalid state.
func (v Invalid) ConfigYAML() string {
	c := Case{Prefixes: v.Prefixes, Bindings: v.Bindings}
	return c.ConfigYAML("")
}
