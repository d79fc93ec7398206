package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fusou-proxy/fusou-proxy/internal/private"
)

// rename is os.Rename; tests swap it to make renames fail as they do across devices.
var rename = os.Rename

// Move moves the file or folder src to dst, replacing a file at dst and merging into a folder at
// dst. It renames; when a rename fails (src and dst on different devices, say) it copies instead,
// file by file, each copy fsync'd before its source is removed, so a move interrupted at any
// point can be run again to finish it. Modes are kept, and what was private (private.Check)
// stays private; anything but regular files and folders is refused.
func Move(src, dst string) error {
	err := rename(src, dst)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return err
	}
	info, lerr := os.Lstat(src)
	if lerr != nil {
		return lerr
	}
	switch {
	case info.IsDir():
		return moveDir(src, dst, info.Mode().Perm())
	case info.Mode().IsRegular():
		return moveByCopy(src, dst, info.Mode().Perm())
	}
	return fmt.Errorf("move %s: not a regular file or folder (rename: %w)", src, err)
}

// moveDir moves each entry of the folder src into the folder dst, then removes src.
func moveDir(src, dst string, perm fs.FileMode) error {
	if err := os.Mkdir(dst, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if private.Check(src) == nil {
		if err := private.Dir(dst); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := Move(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	if err := SyncDir(dst); err != nil {
		return fmt.Errorf("sync %s: %w", dst, err)
	}
	return os.Remove(src)
}

// moveByCopy copies the file src over dst with mode perm, fsyncs it, then removes src.
func moveByCopy(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	// The copy is private before a byte lands if the source is (perm says nothing on Windows,
	// where that is an ACL), and has the source's mode even over a partial copy left by an
	// interrupted move.
	if private.Check(src) == nil {
		err = private.File(dst)
	}
	if err == nil {
		err = out.Chmod(perm)
	}
	if err == nil {
		_, err = io.Copy(out, in)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = SyncDir(filepath.Dir(dst))
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	_ = in.Close() // Windows cannot remove an open file
	return os.Remove(src)
}
