// Package cases holds the worked examples of binding semantics shared by
// every layer's tests (a copy of ../shared/cases/bindings.yaml, kept equal by
// TestSharedCopy) and decodes them.
package cases

import (
	"bytes"
	_ "embed"
	"fmt"

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
