//go:build unix

package journal

import (
	"os"
	"syscall"
)

// diskUsage is the disk a file takes: its allocated blocks, which a preallocation counts.
func diskUsage(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
