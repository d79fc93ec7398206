//go:build !windows

package privatetest

import "os"

func expose(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	bits := os.FileMode(0o044)
	if fi.IsDir() {
		bits = 0o055
	}
	return os.Chmod(path, fi.Mode().Perm()|bits)
}
