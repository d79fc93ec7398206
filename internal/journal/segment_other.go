//go:build !linux

package journal

import "os"

// createSegmentFile creates a segment file for writing; O_DIRECT is Linux's.
func createSegmentFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
}

// writeVectors writes bufs one after another at off.
func writeVectors(f *os.File, bufs [][]byte, off int64) error {
	for _, b := range bufs {
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}
