package journal

import (
	"errors"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// createSegmentFile creates a segment file for writing with O_DIRECT, so that the bytes go to the
// disk without the page cache's CPU cost, or without it where the file system refuses it. The
// file grows with its writes: nothing is reserved, so a store holding kilobytes takes kilobytes.
func createSegmentFile(path string) (*os.File, error) {
	const flags = os.O_RDWR | os.O_CREATE | os.O_EXCL
	if useDirect {
		f, err := os.OpenFile(path, flags|syscall.O_DIRECT, 0o600)
		if !errors.Is(err, syscall.EINVAL) {
			return f, err
		}
		os.Remove(path) // the open may have made the file before refusing O_DIRECT
	}
	return os.OpenFile(path, flags, 0o600)
}

// writeVectors writes bufs one after another at off, with as few system calls as it can.
func writeVectors(f *os.File, bufs [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for len(bufs) > 0 {
		batch := bufs[:min(len(bufs), maxVectors)]
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Pwritev(int(fd), batch, off)
			return werr != unix.EAGAIN
		}); err != nil {
			return err
		}
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: werr}
		}
		if n == 0 {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: io.ErrShortWrite}
		}
		off += int64(n)
		bufs = skipWritten(bufs, n)
	}
	return nil
}
