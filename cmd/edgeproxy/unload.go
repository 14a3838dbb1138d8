package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// cmdUnload removes pinned dispatcher state. Exit status 0: removed, or
// nothing was pinned there (the directory does not exist, or is an empty
// directory of a bpf filesystem). 1: refused, nothing removed: the
// directory is not on a bpf filesystem, holds anything but edgeproxy's
// pins, or a running edgeproxy holds it (named by pid).
func cmdUnload(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("unload", stderr)
	pinDir := fs.String("pin-dir", dispatch.DefaultPinDir, "`directory` of the pinned state")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unload: unexpected argument %q (the directory goes in --pin-dir)", fs.Arg(0))
	}
	err := dispatch.Unload(*pinDir)
	if errors.Is(err, dispatch.ErrNothingPinned) {
		fmt.Fprintf(stdout, "nothing to unload: %v\n", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("unload: %w", err)
	}
	fmt.Fprintf(stdout, "removed pinned state from %s: the kernel's normal lookup decides again\n", *pinDir)
	return nil
}
