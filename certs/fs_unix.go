//go:build !windows

package certs

import (
	"fmt"
	"os"

	"go.uber.org/zap"
)

// fixKeyMode makes the key file 0600 again if someone widened it, so the key is not left
// readable by other users.
func fixKeyMode(path string, logger *zap.Logger) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat key: %w", err)
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	logger.Warn("CA key file was readable by others; making it 0600",
		zap.String("file", path), zap.Stringer("mode", fi.Mode().Perm()))
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("chmod key: %w", err)
	}
	return nil
}
