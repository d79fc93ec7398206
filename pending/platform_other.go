//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly || windows)

package pending

import (
	"os"
)

// lockFolder only opens the folder on platforms without flock (plan9, wasm, solaris, aix):
// those builds compile, but two processes could open one store there.
func lockFolder(dir string) (*os.File, error) { return os.Open(dir) }

// syncDir is best effort: some of these platforms cannot fsync a directory.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	_ = d.Sync()
	return d.Close()
}
