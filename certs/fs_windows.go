package certs

import "go.uber.org/zap"

// syncDir does nothing on Windows: a folder cannot be opened for fsync there, and NTFS
// journals the rename itself.
func syncDir(dir string) error { return nil }

// fixKeyMode does nothing on Windows: Unix permission bits do not apply; the key is
// protected by the ACL the user's profile folder inherits.
func fixKeyMode(path string, logger *zap.Logger) error { return nil }
