package config

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestRestartKeysDocumented: docs/config.md lists the keys a reload cannot
// change, and its list is the schema's (the fields tagged reload:"restart").
func TestRestartKeysDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(string(doc), "Keys a reload cannot change")
	if !ok {
		t.Fatal("docs/config.md has no paragraph \"Keys a reload cannot change\"")
	}
	list, _, _ = strings.Cut(list, "\n\n")
	list, _, _ = strings.Cut(list, ". ")
	var documented []string
	for _, m := range regexp.MustCompile("`([a-z0-9_.]+)`").FindAllStringSubmatch(list, -1) {
		documented = append(documented, m[1])
	}
	want := RestartKeys()
	slices.Sort(documented)
	slices.Sort(want)
	if !slices.Equal(documented, want) {
		t.Errorf("docs/config.md lists %v as keys a reload cannot change; the schema tags %v", documented, want)
	}
}

func TestCheckReload(t *testing.T) {
	cur, err := Parse([]byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	next, err := Parse([]byte(`admin: {listen: "127.0.0.1:9"}
spectrum: {max_datagram: 1500}
cdn: {loop_id: other, sites: [{hosts: [a.example], origins: ["http://127.0.0.1:1"]}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	err = CheckReload(cur.Config, next.Config)
	for _, want := range []string{"admin: changing it needs a restart", "spectrum.max_datagram: changing it needs a restart"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "cdn") {
		t.Errorf("cdn.loop_id and cdn.sites change by reload: %v", err)
	}
	if err := CheckReload(cur.Config, cur.Config); err != nil {
		t.Errorf("no change refused: %v", err)
	}
}
