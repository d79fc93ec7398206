//go:build !unix

package connlimit

// processFDLimit is 0: Windows has no per-process descriptor limit like RLIMIT_NOFILE.
func processFDLimit() uint64 { return 0 }
