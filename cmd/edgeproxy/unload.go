package main

import (
	"fmt"
	"io"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

func cmdUnload(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("unload", stderr)
	pinDir := fs.String("pin-dir", dispatch.DefaultPinDir, "`directory` of the pinned state")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := dispatch.Unload(*pinDir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "removed pinned state from %s: the kernel's normal lookup decides again\n", *pinDir)
	return nil
}
