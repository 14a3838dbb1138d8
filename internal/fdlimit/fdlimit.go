// Package fdlimit sizes the services' connection limits from the
// process's open-file limit.
package fdlimit

import "golang.org/x/sys/unix"

// Pairs is how many connections of two descriptors each (client and
// origin) the open-file limit allows after a reserve of 1024 for
// everything else.
func Pairs() int {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<24 {
		return 100_000
	}
	return max(int(r.Cur)-1024, 128) / 2
}
