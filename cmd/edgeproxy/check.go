package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/store"
)

// checkStoreTimeout bounds check's wait for the store's lock: a running
// node holds it for as long as it runs.
const checkStoreTimeout = time.Second

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
	if cfg.Store.Path == "" {
		return nil
	}
	return checkStore(*path, cfg, stdout)
}

// checkStore validates the store's items together with the file's, as a
// start does. A store a running node holds is not read: check says so and
// succeeds.
func checkStore(path string, cfg *config.Plan, stdout io.Writer) error {
	s, err := store.OpenReadOnly(cfg.Store.Path, checkStoreTimeout)
	var inUse *store.InUseError
	if errors.As(err, &inUse) {
		fmt.Fprintf(stdout, "%v: its items were not checked\n", inUse)
		return nil
	}
	if err != nil {
		return err
	}
	defer s.Close()
	api, rev, err := s.Load()
	if err != nil {
		return err
	}
	if err := bindings.Validate(bindings.Merge(cfg.State, api).Clone(), cfg.Services, cfg.Guards); err != nil {
		return fmt.Errorf("%s with the items of %s: %w", path, s, err)
	}
	fmt.Fprintf(stdout, "%s: ok (%d prefixes, %d bindings made through the API, at revision %d)\n", s, len(api.Prefixes), len(api.Bindings), rev)
	return nil
}
