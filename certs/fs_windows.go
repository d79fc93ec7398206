package certs

import "go.uber.org/zap"

// fixKeyMode does nothing on Windows: Unix permission bits do not apply; the key is
// protected by the ACL the user's profile folder inherits.
func fixKeyMode(path string, logger *zap.Logger) error { return nil }
