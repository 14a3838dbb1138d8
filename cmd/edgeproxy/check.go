package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/server"
	"github.com/edgeproxy/edgeproxy/store"
)

// checkStoreTimeout bounds check's wait for the store's lock: a running
// node holds it for as long as it runs.
const checkStoreTimeout = time.Second

// cmdCheck loads a file as run does, every file it names read, but binds
// no socket and touches neither the data plane nor etcd. It prints the
// warnings run would log, on stderr, one "warning: " line each; --strict
// makes them fail the check.
func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	path := fs.String("config", "", "configuration `file` to check")
	strict := fs.Bool("strict", false, "exit 1 on warnings too")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" || fs.NArg() > 0 {
		return usagef("check: usage: edgeproxy check [--strict] --config FILE")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if err := checkFiles(cfg); err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	fmt.Fprintf(stdout, "%s: ok (%d prefixes, %d bindings, %d spectrum apps)\n", *path, len(cfg.State.Prefixes), len(cfg.State.Bindings), len(cfg.Apps))
	state := cfg.State
	if cfg.Store.Path != "" {
		api, err := checkStore(*path, cfg, stdout)
		if err != nil {
			return err
		}
		if api != nil {
			state = bindings.Merge(cfg.State, api)
		}
	}
	ws := cfg.Warnings(state)
	for _, w := range ws {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if *strict && len(ws) > 0 {
		return fmt.Errorf("%s: %d warning(s), and --strict", *path, len(ws))
	}
	return nil
}

// checkFiles reads what run reads before it serves: the namespace it
// enters, and what server.Check reads.
func checkFiles(cfg *config.Plan) error {
	var netnsErr error
	if p := cfg.Dispatch.Netns; p != "" {
		fd, err := openNetns(p)
		if err == nil {
			unix.Close(fd)
		}
		netnsErr = err
	}
	return errors.Join(netnsErr, server.Check(cfg))
}

// checkStore validates the store's items together with the file's, as a
// start does, and returns them. A store a running node holds is not read:
// check says so and succeeds, with no items.
func checkStore(path string, cfg *config.Plan, stdout io.Writer) (*bindings.State, error) {
	s, err := store.OpenReadOnly(cfg.Store.Path, checkStoreTimeout)
	var inUse *store.InUseError
	if errors.As(err, &inUse) {
		fmt.Fprintf(stdout, "%v: its items were not checked\n", inUse)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer s.Close()
	api, rev, err := s.Load()
	if err != nil {
		return nil, err
	}
	if err := bindings.Validate(bindings.Merge(cfg.State, api).Clone(), cfg.Services, cfg.Guards); err != nil {
		return nil, fmt.Errorf("%s with the items of %s: %w", path, s, err)
	}
	fmt.Fprintf(stdout, "%s: ok (%d prefixes, %d bindings made through the API, at revision %d)\n", s, len(api.Prefixes), len(api.Bindings), rev)
	return api, nil
}
