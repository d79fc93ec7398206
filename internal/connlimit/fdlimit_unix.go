//go:build unix

package connlimit

import "golang.org/x/sys/unix"

// processFDLimit is the soft RLIMIT_NOFILE, the one the kernel enforces. Go raises it to
// the hard limit at start-up (Go 1.19 and later), so this is the most the process can open.
func processFDLimit() uint64 {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return uint64(r.Cur)
}
