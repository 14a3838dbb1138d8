package main

import (
	"fmt"
	"io"

	"github.com/edgeproxy/edgeproxy/config"
)

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	path := fs.String("config", "", "configuration `file` to check")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" || fs.NArg() > 0 {
		return usagef("check: usage: edgeproxy check --config FILE")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d prefixes, %d bindings, %d spectrum apps)\n", *path, len(cfg.State.Prefixes), len(cfg.State.Bindings), len(cfg.Apps))
	return nil
}
