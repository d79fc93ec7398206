//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package pending

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/fusou-proxy/fusou-proxy/internal/atomicfile"
)

// lockFolder takes an exclusive flock on the store folder itself, without waiting. A lock on the
// folder cannot be sidestepped by deleting a file, as one on .lock could; flock belongs to the
// open descriptor, so a second Open in the same process is refused too, and the kernel drops it
// when the owner dies.
func lockFolder(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open pending folder: %w", err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		_ = f.Close()
		return nil, ErrLocked
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("flock: %w", err)
	}
	return f, nil
}

// syncDir makes the renames and removals in dir durable.
func syncDir(dir string) error { return atomicfile.SyncDir(dir) }
