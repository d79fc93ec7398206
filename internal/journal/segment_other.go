//go:build !linux

package journal

import "os"

// createSegmentFile creates a segment file for writing; O_DIRECT is Linux's.
func createSegmentFile(path string, size int64) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
}
