package pending

import (
	"fmt"
	"io"
	"os"
)

// readSmall reads the regular file at path, of at most max bytes, into buf (grown as needed). It
// never follows a symlink (openRegular).
func readSmall(path string, buf []byte, max int) ([]byte, error) {
	f, _, err := openRegular(path)
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
