package pending

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Spare files. A delivered entry's files are kept, renamed to spare names, and reused for the
// next entries' temp files and the pipeline's spool files, instead of being removed and new ones
// created. On ext4, creating a file soon after others were removed is slow: the allocator skips
// the inodes freed in the last ~30 s, and a steady stream of new assets that are uploaded and
// deleted made each create cost 100 to 450 µs of CPU on the test machine against 16 µs
// otherwise (docs/bench/proxy-pipeline.md). A rename costs about 20 µs.
const (
	// maxSpares bounds the pool: with deliveries keeping pace, each entry takes two spares
	// (its spool file and its .json temp file) and gives two back.
	maxSpares = 64
	// maxSpareBytes is the largest file kept as a spare, so that the pool holds at most a few
	// MiB of disk until its files are reused.
	maxSpareBytes = 256 << 10
	sparePrefix   = tempPrefix + "spare-" // swept at Open like every temp file
)

// retire removes the file at path, or keeps it as a spare when it is small and the pool has
// room. A missing file is not an error.
func (s *Store) retire(path string, size int64) error {
	s.mu.Lock()
	keep := size <= maxSpareBytes && len(s.spares) < maxSpares && !s.opts.ReadOnly
	s.spareSeq++
	spare := s.path(fmt.Sprintf("%s%d", sparePrefix, s.spareSeq))
	s.mu.Unlock()
	if !keep {
		return removeIfExists(path)
	}
	if err := os.Rename(path, spare); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	s.mu.Lock()
	s.spares = append(s.spares, spare)
	s.mu.Unlock()
	return nil
}

// popSpare takes a spare's path from the pool.
func (s *Store) popSpare() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.spares) == 0 {
		return "", false
	}
	p := s.spares[len(s.spares)-1]
	s.spares = s.spares[:len(s.spares)-1]
	return p, true
}

// openEmpty opens an existing file for writing, emptied.
func openEmpty(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_TRUNC, 0)
}

// newTemp opens a new temp file in dir for the store to write: a spare when dir is the store
// folder and one is ready, else a new file.
func (s *Store) newTemp(dir, pattern string) (tempFile, error) {
	if dir == s.dir {
		if p, ok := s.popSpare(); ok {
			if f, err := openEmpty(p); err == nil {
				return s.fs.Wrap(f), nil
			}
			_ = os.Remove(p)
		}
	}
	// os.CreateTemp makes the file 0600, the mode every store file has.
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, fmt.Errorf("create temp file: %w", err)
	}
	return s.fs.Wrap(f), nil
}

// TakeSpare moves a spare file to path (which must not exist, on the store's file system) and
// returns it open for reading and writing, empty. It reports false when no spare is ready or the
// move fails; the caller then creates its own file.
func (s *Store) TakeSpare(path string) (*os.File, bool) {
	if s.begin(true) != nil {
		return nil, false
	}
	defer s.life.RUnlock()
	spare, ok := s.popSpare()
	if !ok {
		return nil, false
	}
	if err := os.Rename(spare, path); err != nil {
		_ = os.Remove(spare)
		return nil, false
	}
	f, err := openEmpty(path)
	if err != nil {
		_ = os.Remove(path)
		return nil, false
	}
	return f, true
}

// removeSpares removes the pool's files, at Close.
func (s *Store) removeSpares() {
	s.mu.Lock()
	spares := s.spares
	s.spares = nil
	s.mu.Unlock()
	for _, p := range spares {
		_ = os.Remove(p)
	}
}
