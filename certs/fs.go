package certs

import (
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/internal/private"
)

// fixKeyMode makes the key file private again (0600, or an ACL for the current user only on
// Windows) if someone opened it to others, so the key is not left readable by other users.
func fixKeyMode(path string, logger *zap.Logger) error {
	err := private.Check(path)
	if !errors.Is(err, private.ErrExposed) {
		return err // nil: already private
	}
	logger.Warn("CA key file was readable by other users; making it private",
		zap.String("file", path), zap.String("why", err.Error()))
	if err := private.File(path); err != nil {
		return fmt.Errorf("restrict key: %w", err)
	}
	return nil
}
