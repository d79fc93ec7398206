//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly || windows)

package pending

import (
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
