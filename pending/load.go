package pending

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// scanned is what load learned about one <stem>.json.
type scanned struct {
	stem    string
	meta    Meta
	ctx     Context
	problem string // why the entry is corrupt; empty if it is sound
	noBin   bool   // the .json has no .bin beside it
}

// load checks the folder and builds the index (SPEC §6 "On open"). It trusts nothing on disk:
// temp files and orphans are removed, unreadable entries go to corrupt/, each logged. A read-only
// store changes nothing and only skips what it cannot use.
func (s *Store) load() error {
	dirents, err := readDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) && s.opts.ReadOnly {
		return nil // nothing was ever saved: an empty store
	}
	if err != nil {
		return fmt.Errorf("read folder: %w", err)
	}
	// The .json files name the entries; their directory-entry types catch a symlinked .json
	// without a stat.
	jsonTypes := make(map[string]fs.FileMode, len(dirents)/2)
	var stems []string
	for _, d := range dirents {
		if stem, ok := strings.CutSuffix(d.Name(), ".json"); ok && !strings.HasPrefix(stem, tempPrefix) {
			jsonTypes[stem] = d.Type()
			stems = append(stems, stem)
		}
	}

	changed := false
	for _, d := range dirents {
		name := d.Name()
		switch {
		case strings.HasPrefix(name, tempPrefix):
			// An interrupted write: never part of a committed entry.
			changed = s.removeStray(name, "temp file") || changed
		case strings.HasSuffix(name, ".bin"):
			if _, ok := jsonTypes[strings.TrimSuffix(name, ".bin")]; ok {
				continue
			}
			// A .bin whose .json never landed. SPEC §6 gives it a minute's grace.
			info, err := d.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if age := s.opts.Now().Sub(info.ModTime()); age < orphanMinAge {
				s.log.Debug("Left young orphan .bin", zap.String("file", name))
				continue
			}
			changed = s.removeStray(name, "orphan .bin") || changed
		}
	}

	// A Reject interrupted by a crash can leave its temp file in rejected/.
	if rejected, err := os.ReadDir(s.path(rejectedDir)); err == nil {
		for _, d := range rejected {
			if strings.HasPrefix(d.Name(), tempPrefix) {
				s.removeStray(filepath.Join(rejectedDir, d.Name()), "temp file")
			}
		}
	}

	results := s.scan(stems, jsonTypes)
	var good []*entry
	for i := range results {
		r := &results[i]
		switch {
		case r.noBin && s.rejectedComplete(r.stem):
			// A Reject stopped after moving the .bin: finish it.
			if !s.opts.ReadOnly {
				if err := removeIfExists(s.path(r.stem + ".json")); err != nil {
					return fmt.Errorf("finish rejection of %s: %w", r.stem, err)
				}
				s.log.Info("Finished interrupted rejection", zap.String("id", r.stem), zap.String("key", r.ctx.Key))
				changed = true
			}
		case r.noBin:
			// The .bin is gone, so the bytes are lost: drop the metadata (SPEC §6).
			changed = s.discardFile(r, r.stem+".json", "no .bin beside the .json") || changed
		case r.problem != "":
			changed = s.moveToCorrupt(r) || changed
		default:
			good = append(good, &entry{e: Entry{Meta: r.meta, Context: r.ctx}})
		}
	}

	slices.SortFunc(good, func(a, b *entry) int {
		if entryLess(&a.e, &b.e) {
			return -1
		}
		return 1
	})
	s.order = make([]*entry, 0, len(good))
	for _, e := range good {
		k := keyHash{e.e.Context.Key, e.e.Context.ContentHash}
		if kept := s.byKey[k]; kept != nil && !s.opts.ReadOnly {
			// Only another writer can have made this (Save dedupes); keep the older one.
			if err := s.removePair(e.e.ID, e.size()); err != nil {
				return fmt.Errorf("remove duplicate %s: %w", e.e.ID, err)
			}
			s.log.Warn("Removed duplicate pending upload", zap.String("id", e.e.ID),
				zap.String("key", k.key), zap.String("kept", kept.e.ID))
			changed = true
			continue
		}
		if hasSecrets(e.e.Headers) {
			e.e.Headers = stripSecrets(e.e.Headers)
			if !s.opts.ReadOnly {
				// Written by something else: scrub the secret from disk too.
				if err := s.writeMeta(e.e.Meta); err != nil {
					return fmt.Errorf("scrub headers of %s: %w", e.e.ID, err)
				}
				s.log.Warn("Removed secret headers from pending upload", zap.String("id", e.e.ID))
			}
		}
		// Same order as good, so this is an append.
		s.mu.Lock()
		s.insertLocked(e)
		s.mu.Unlock()
	}

	if changed {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return fmt.Errorf("sync folder: %w", err)
		}
	}
	return nil
}

// rejectedComplete reports whether rejected/ holds both files of stem.
func (s *Store) rejectedComplete(stem string) bool {
	for _, name := range []string{stem + ".json", stem + ".bin"} {
		if _, err := os.Lstat(s.path(rejectedDir, name)); err != nil {
			return false
		}
	}
	return true
}

// readDir is os.ReadDir without the sort, which load does not need.
func readDir(dir string) ([]fs.DirEntry, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// scan reads and checks every <stem>.json and the size of its .bin, in parallel: at 100,000
// entries the syscalls and decoding dominate Open.
func (s *Store) scan(stems []string, jsonTypes map[string]fs.FileMode) []scanned {
	results := make([]scanned, len(stems))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(2, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			buf := make([]byte, 0, 4096)
			for {
				i := int(next.Add(1)) - 1
				if i >= len(stems) {
					return
				}
				results[i], buf = s.check(stems[i], jsonTypes[stems[i]], buf)
			}
		})
	}
	wg.Wait()
	return results
}

// check validates one entry whose .json has directory-entry type typ; buf is a reusable read
// buffer.
func (s *Store) check(stem string, typ fs.FileMode, buf []byte) (scanned, []byte) {
	r := scanned{stem: stem}
	if !typ.IsRegular() {
		r.problem = fmt.Sprintf(".json is not a regular file (%s)", typ)
		return r, buf
	}
	base := s.dir + string(os.PathSeparator) + stem
	data, err := readSmall(base+".json", buf, maxMetaBytes)
	if err != nil {
		r.problem = "read .json: " + err.Error()
		return r, buf
	}
	buf = data[:0]
	r.meta, r.ctx, err = decodeMeta(stem, data)
	if err != nil {
		r.problem = err.Error()
		return r, buf
	}
	// lstat, so that a symlink in place of the .bin is caught rather than followed.
	size, regular, err := lstatSize(base + ".bin")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.noBin = true
	case err != nil:
		r.problem = fmt.Sprintf("stat .bin: %v", err)
	case !regular:
		r.problem = ".bin is not a regular file"
	case size != r.ctx.FileSize:
		r.problem = fmt.Sprintf(".bin is %d bytes, context says %d", size, r.ctx.FileSize)
	}
	return r, buf
}

// removeStray removes a file that is not part of any entry and logs it. It reports whether the
// folder changed.
func (s *Store) removeStray(name, reason string) bool {
	if s.opts.ReadOnly {
		return false
	}
	if err := removeIfExists(s.path(name)); err != nil {
		s.log.Error("Failed to remove stray pending file", zap.String("file", name), zap.Error(err))
		return false
	}
	s.log.Info("Removed stray pending file", zap.String("file", name), zap.String("reason", reason))
	return true
}

// discardFile removes name, the remains of entry r, logging a discard with detail.
func (s *Store) discardFile(r *scanned, name, detail string) bool {
	fields := []zap.Field{zap.String("id", r.stem), zap.String("key", r.ctx.Key),
		zap.String("reason", ReasonCorrupt), zap.String("detail", detail)}
	if s.opts.ReadOnly {
		s.log.Warn("Skipped unreadable pending upload", fields...)
		return false
	}
	if err := removeIfExists(s.path(name)); err != nil {
		s.log.Error("Failed to remove pending file", append(fields, zap.Error(err))...)
		return false
	}
	s.log.Warn("Discarded pending upload", fields...)
	return true
}

// moveToCorrupt moves entry r's files (whichever exist) to corrupt/ and logs why.
func (s *Store) moveToCorrupt(r *scanned) bool {
	fields := []zap.Field{zap.String("id", r.stem), zap.String("key", r.ctx.Key),
		zap.String("reason", ReasonCorrupt), zap.String("detail", r.problem)}
	if s.opts.ReadOnly {
		s.log.Warn("Skipped unreadable pending upload", fields...)
		return false
	}
	if err := s.quarantineFiles(r.stem); err != nil {
		s.log.Error("Failed to move pending upload to corrupt/", append(fields, zap.Error(err))...)
		return false
	}
	s.log.Warn("Discarded pending upload", append(fields, zap.String("moved_to", corruptDir))...)
	return true
}

// quarantineFiles renames <stem>.json, then <stem>.bin, into corrupt/ (the .json first, so the
// entry stops existing before its bytes move). Renaming moves a symlink itself, never its target.
func (s *Store) quarantineFiles(stem string) error {
	if err := os.MkdirAll(s.path(corruptDir), dirMode); err != nil {
		return fmt.Errorf("create corrupt folder: %w", err)
	}
	for _, name := range []string{stem + ".json", stem + ".bin"} {
		err := os.Rename(s.path(name), s.path(corruptDir, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("move %s: %w", name, err)
		}
	}
	if err := s.fs.SyncDir(s.path(corruptDir)); err != nil {
		return fmt.Errorf("sync corrupt folder: %w", err)
	}
	return nil
}
