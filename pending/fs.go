package pending

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// fileSystem is how the store writes its temp files and fsyncs its folders. It is a seam for
// tests, which wrap it to fail writes with ENOSPC or to skip fsyncs; everything else goes to
// package os.
type fileSystem interface {
	// Wrap returns the temp file f, which the store opened, as the store is to write it.
	Wrap(f *os.File) tempFile
	SyncFile(path string) error
	SyncDir(dir string) error
}

// tempFile is the part of *os.File the store writes through.
type tempFile interface {
	io.Writer
	Name() string
	Sync() error
	Close() error
}

type osFS struct{}

func (osFS) Wrap(f *os.File) tempFile { return f }

func (osFS) SyncDir(dir string) error { return syncDir(dir) }

// SyncFile fsyncs the file at path. Windows flushes only a handle open for writing.
func (osFS) SyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeTempBytes writes data (a .json) to a new temp file in dir, fsyncs it if sync is set,
// closes it and returns its path. On failure nothing is left behind.
func (s *Store) writeTempBytes(dir string, data []byte, sync bool) (string, error) {
	tf, err := os.CreateTemp(dir, tempPrefix+"*.json") // 0600, the mode of every store file
	if err != nil {
		return "", fmt.Errorf("create temp file: %w", err)
	}
	f := s.fs.Wrap(tf)
	if _, err = f.Write(data); err != nil {
		err = fmt.Errorf("write temp file: %w", err)
	} else if sync {
		if err = f.Sync(); err != nil {
			err = fmt.Errorf("sync temp file: %w", err)
		}
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close temp file: %w", cerr)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// replaceFile atomically replaces dir/name with data: temp file, fsync, rename, fsync dir.
func (s *Store) replaceFile(dir, name string, data []byte) error {
	tmp, err := s.writeTempBytes(dir, data, true)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("rename temp file: %w", err)
	}
	if err := s.fs.SyncDir(dir); err != nil {
		return fmt.Errorf("sync folder: %w", err)
	}
	return nil
}

// openRegular opens path for reading only if it is a regular file, never through a symlink: the
// file opened must be the one Lstat saw.
func openRegular(path string) (*os.File, os.FileInfo, error) {
	li, err := os.Lstat(path)
	if err != nil {
		return nil, nil, err
	}
	if !li.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file (%s)", path, li.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil || !os.SameFile(li, fi) {
		_ = f.Close()
		return nil, nil, fmt.Errorf("%s changed while being opened", path)
	}
	return f, fi, nil
}

// hashFile returns the SHA-256 of r's remaining bytes.
func hashFile(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
