package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/edgeproxy/edgeproxy/bench/report"
)

// reportCmd is `edgebench report`: the summary, the charts and the
// README's section from the results already written.
func reportCmd(args []string) int {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	results := fs.String("results", "bench/results", "the directory of the results (*.json); the summary and charts go there too")
	readme := fs.String("readme", "README.md", `the README whose benchmark section is replaced ("" for none)`)
	fs.Parse(args)
	if err := writeReport(*results, *readme); err != nil {
		fmt.Fprintln(os.Stderr, "edgebench report:", err)
		return 1
	}
	return 0
}

// writeReport writes the report and says what it wrote.
func writeReport(results, readme string) error {
	w, err := report.Generate(results, readme)
	if err != nil {
		return err
	}
	for _, f := range w.Files {
		logf("report: wrote %s", f)
	}
	for _, f := range w.Removed {
		logf("report: removed %s (its data is gone)", f)
	}
	for _, s := range w.Skipped {
		logf("report: skipped %s", s)
	}
	if readme != "" && !w.Readme {
		logf("report: %s already up to date", readme)
	}
	return nil
}
