//go:build !windows

package private

import (
	"fmt"
	"os"
)

// Dir makes the existing folder path 0700.
func Dir(path string) error { return chmod(path, 0o700) }

// File makes the existing file path 0600.
func File(path string) error { return chmod(path, 0o600) }

func chmod(path string, mode os.FileMode) error {
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("make private: %w", err)
	}
	return nil
}

// Check returns nil if path has no group or other permission bits, and an error wrapping
// ErrExposed that names the mode if it has.
func Check(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("check privacy: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s: %w (mode %v)", path, ErrExposed, perm)
	}
	return nil
}

// CreateTemp is os.CreateTemp, which already makes the file 0600.
func CreateTemp(dir, pattern string) (*os.File, error) { return os.CreateTemp(dir, pattern) }
