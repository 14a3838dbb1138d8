// Package bench holds edgeproxy's benchmarks that compare it with other
// programs (nginx, haproxy) under a load generator (wrk), each program
// pinned to its CPU. Run them with `make bench`; results go to
// bench/results/ and the numbers that matter to docs/.
package bench
