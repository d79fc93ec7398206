// Package atomicfile replaces small files so that a crash leaves either the old file or the
// new one, never a mix: write a temp file in the same folder, fsync, close, rename over the
// target, then fsync the folder so the rename itself survives.
//
// The model is tailscale's atomicfile.WriteFile and litestream's WriteTXIDFile; pending.Store
// keeps its own variant because it injects faults between those steps in its tests.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/fusou-proxy/fusou-proxy/internal/private"
)

// TempMarker is part of every temp file's name (".<name>.tmp-<random>"), so that a caller can
// find and remove what a crash left behind.
const TempMarker = ".tmp-"

// WriteFile replaces path with data. The temp file gets perm before any byte is written, so a
// secret is never readable by others, and is removed on failure. A perm with no group or other
// bits (0600, 0400) also means private where mode bits mean nothing: on Windows the file is
// created with an ACL for the current user only (private.CreateTemp).
func WriteFile(path string, data []byte, perm os.FileMode) (err error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	createTemp := os.CreateTemp
	if perm&0o077 == 0 {
		createTemp = private.CreateTemp
	}
	f, err := createTemp(dir, "."+name+TempMarker+"*")
	if err != nil {
		return fmt.Errorf("create temp file for %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod temp file for %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename %s: %w", name, err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("sync folder of %s: %w", name, err)
	}
	return nil
}
