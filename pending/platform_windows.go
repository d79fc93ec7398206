//go:build windows

package pending

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/windows"
)

// lockFolder takes an exclusive lock on one byte of the folder's .lock file, at 4 GiB so that
// the pid written at its start stays readable and writable, without waiting. Go opens files without FILE_SHARE_DELETE, so the locked file cannot be deleted while
// held; Windows drops the lock when the handle is closed or the process dies.
func lockFolder(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	ol := &windows.Overlapped{OffsetHigh: 1}
	err = windows.LockFileEx(windows.Handle(f.Fd()),
		windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		_ = f.Close()
		return nil, ErrLocked
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock file: %w", err)
	}
	return f, nil
}

// syncDir is a no-op: Windows cannot fsync a directory handle opened by os.Open, and NTFS journals
// the renames themselves.
func syncDir(dir string) error { return nil }
