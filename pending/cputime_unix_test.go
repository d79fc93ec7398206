//go:build unix

package pending

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time the process has used, user and system, so that benchmarks can
// report work done apart from waiting on a busy machine.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
