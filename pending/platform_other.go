//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly || windows)

package pending

import (
	"fmt"
	"io"
	"os"
)

// lockFile does nothing on platforms without flock (plan9, wasm, solaris, aix): those builds
// compile, but two processes could open one store there.
func lockFile(f *os.File) error { return nil }

// syncDir is best effort: some of these platforms cannot fsync a directory.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	_ = d.Sync()
	return d.Close()
}

// readSmall reads the file at path, of at most max bytes, into buf (grown as needed). A symlink
// was already refused from its directory entry's type.
func readSmall(path string, buf []byte, max int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > max {
			return nil, fmt.Errorf("%s is over the %d byte limit", path, max)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// lstatSize returns the size of path and whether it is a regular file, never following a symlink.
func lstatSize(path string) (size int64, regular bool, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, false, err
	}
	return fi.Size(), fi.Mode().IsRegular(), nil
}
