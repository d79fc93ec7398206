package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fusou-proxy/fusou-proxy/internal/atomicfile"
)

// caMarker is the file that makes a ca/ folder this program's (certs.CertFile).
const caMarker = "fusou-ca.pem"

// ownFiles are this program's entries of a data directory besides pending_uploads/, in the
// order they are moved.
var ownFiles = []string{CADir, TokenFile, IndexFile, SpoolDir, ConfigFile}

// MovePendingFunc moves this program's entries from one pending folder to another and reports
// how many moved (pending.MoveOwnEntries): only the pending package reads those files.
type MovePendingFunc func(from, to string) (int, error)

// MoveOldDefault moves this program's files from oldDir, the earlier default data directory, to
// newDir, once: when newDir does not exist and oldDir holds a CA (ca/fusou-ca.pem) or a control
// token, so that the user's trusted CA keeps working. It moves ca/, control.token,
// asset_index.json, spool/, configs.toml and, through movePending, this program's pending
// entries; everything else in oldDir (the FUSOU app's files) stays. The files gather in a
// staging folder beside newDir that is renamed to newDir last, so an interrupted move leaves no
// half-made newDir and is finished by the next call. It returns the names moved, nil when there
// was nothing to do.
func MoveOldDefault(oldDir, newDir string, movePending MovePendingFunc) ([]string, error) {
	staging := filepath.Join(filepath.Dir(newDir), "."+filepath.Base(newDir)+".moving")
	if exists(newDir) || !(holdsOurs(oldDir) || exists(staging)) {
		return nil, nil
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", staging, err)
	}
	var moved []string
	// Pending first: it fails while an earlier fusou-proxy still runs from oldDir, before any
	// of that instance's files have moved.
	n, err := movePending(filepath.Join(oldDir, PendingDir), filepath.Join(staging, PendingDir))
	if err != nil {
		return nil, fmt.Errorf("move pending uploads: %w", err)
	}
	if n > 0 {
		moved = append(moved, PendingDir)
	}
	for _, name := range ownFiles {
		src := filepath.Join(oldDir, name)
		if !exists(src) || name == CADir && !exists(filepath.Join(src, caMarker)) {
			continue
		}
		if err := atomicfile.Move(src, filepath.Join(staging, name)); err != nil {
			return moved, fmt.Errorf("move %s: %w", name, err)
		}
		moved = append(moved, name)
	}
	if err := atomicfile.SyncDir(staging); err != nil {
		return moved, fmt.Errorf("sync %s: %w", staging, err)
	}
	if err := os.Rename(staging, newDir); err != nil {
		return moved, fmt.Errorf("rename %s to %s: %w", staging, newDir, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(newDir)); err != nil {
		return moved, fmt.Errorf("sync %s: %w", filepath.Dir(newDir), err)
	}
	return moved, nil
}

// holdsOurs reports whether dir holds this program's CA or control token.
func holdsOurs(dir string) bool {
	return exists(filepath.Join(dir, CADir, caMarker)) || exists(filepath.Join(dir, TokenFile))
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
