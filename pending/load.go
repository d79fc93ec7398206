package pending

import (
	"cmp"
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
	stem        string
	meta        Meta // as the store keeps it: file_path, headers and context in the current format
	ctx         Context
	unsupported string // the kind of an entry that is not an asset; see Entry.Unsupported
	problem     string // why the entry is corrupt; empty if it is sound
	noBin       bool   // the .json has no .bin beside it
	stale       bool   // the .json was not in the current format: check rewrote it
	rewriteErr  error  // why that rewrite failed
	secrets     bool   // the .json held secret headers (written by something else)
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
	swept := s.sweep(dirents, jsonTypes)
	good, settled, err := s.settle(s.scan(stems, jsonTypes))
	if err != nil {
		return err
	}
	indexed, err := s.index(good)
	if err != nil {
		return err
	}
	if swept || settled || indexed {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return fmt.Errorf("sync folder: %w", err)
		}
	}
	return nil
}

// sweep removes the temp files and orphan .bin files of dirents, and the temp files a Reject
// left in rejected/. It reports whether the folder changed.
func (s *Store) sweep(dirents []fs.DirEntry, jsonTypes map[string]fs.FileMode) (changed bool) {
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
	return changed
}

// settle deals with each scanned entry that is not sound (kept aside, finished, discarded or
// moved to corrupt/) and returns the sound ones. It reports whether the folder changed.
func (s *Store) settle(results []scanned) (good []*scanned, changed bool, err error) {
	for i := range results {
		r := &results[i]
		switch {
		case r.unsupported != "":
			// Not ours to upload, nor to change: kept aside until the retry service discards it.
			s.unsupported = append(s.unsupported, Entry{Meta: r.meta, Unsupported: r.unsupported})
		case r.noBin && s.rejectedComplete(r.stem):
			// A Reject stopped after moving the .bin: finish it.
			if !s.opts.ReadOnly {
				if err := removeIfExists(s.path(r.stem + ".json")); err != nil {
					return nil, changed, fmt.Errorf("finish rejection of %s: %w", r.stem, err)
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
			good = append(good, r)
		}
	}
	slices.SortFunc(s.unsupported, func(a, b Entry) int { return compareAge(a.Meta, b.Meta) })
	return good, changed, nil
}

// index adds the sound entries to the index, oldest first, removing duplicates, and reports the
// .json files check rewrote in the current format (the folder is fsync'd once, by load). It
// reports whether the folder changed.
func (s *Store) index(good []*scanned) (changed bool, err error) {
	slices.SortFunc(good, func(a, b *scanned) int { return compareAge(a.meta, b.meta) })
	s.order = make([]*entry, 0, len(good))
	rewritten := 0
	for _, r := range good {
		k := keyHash{r.ctx.Key, r.ctx.ContentHash}
		if kept := s.byKey[k]; kept != nil && !s.opts.ReadOnly {
			// Only another writer can have made this (Save dedupes); keep the older one.
			if err := s.removePair(r.meta.ID); err != nil {
				return changed, fmt.Errorf("remove duplicate %s: %w", r.meta.ID, err)
			}
			s.log.Warn("Removed duplicate pending upload", zap.String("id", r.meta.ID),
				zap.String("key", k.key), zap.String("kept", kept.e.ID))
			changed = true
			continue
		}
		if r.stale && !s.opts.ReadOnly {
			if r.rewriteErr != nil {
				return changed, fmt.Errorf("rewrite metadata of %s: %w", r.meta.ID, r.rewriteErr)
			}
			if r.secrets {
				s.log.Warn("Removed secret headers from pending upload", zap.String("id", r.meta.ID))
			}
			rewritten++
			changed = true
		}
		// Same order as good, so this is an append.
		s.mu.Lock()
		s.insertLocked(&entry{e: Entry{Meta: r.meta, Context: r.ctx}})
		s.mu.Unlock()
	}
	if rewritten > 0 {
		s.log.Info("Rewrote pending metadata in the current format", zap.Int("entries", rewritten))
	}
	return changed, nil
}

// compareAge orders entries oldest first: by created_at, then id.
func compareAge(a, b Meta) int {
	if c := cmp.Compare(a.CreatedAt, b.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
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
	d, err := decodeMeta(stem, data)
	r.meta, r.ctx, r.unsupported = d.meta, d.ctx, d.unsupported
	if err != nil {
		r.problem = err.Error()
		return r, buf
	}
	if r.unsupported != "" {
		return r, buf // left as it is, .bin and all
	}
	r.noBin, r.problem = s.checkBin(base+".bin", &r.ctx)
	if r.noBin || r.problem != "" {
		return r, buf
	}
	// A file in another format (FUSOU's, the seed's, an earlier one of ours), with a file_path
	// from another folder, or with secrets is rewritten at open, so that the FUSOU app could
	// read every entry from here. Layout and field order do not matter to either reader.
	r.secrets = hasSecrets(r.meta.Headers)
	r.stale = !d.ours || !d.tagged || r.secrets || r.meta.FilePath != s.binPath(stem) ||
		r.meta.Headers[hashHeader] != r.ctx.ContentHash
	if r.stale {
		if r.meta, err = s.currentMeta(r.meta, r.ctx); err != nil {
			r.problem = err.Error()
		} else if !s.opts.ReadOnly {
			r.rewriteErr = s.rewriteMeta(r.meta) // here, so that the scan's workers share the fsyncs
		}
	}
	return r, buf
}

// checkBin checks the .bin at path against c, and fills in c's hash when the .json had none.
// noBin reports a missing .bin; problem, why the entry is corrupt.
func (s *Store) checkBin(path string, c *Context) (noBin bool, problem string) {
	// lstat, so that a symlink in place of the .bin is caught rather than followed.
	size, regular, err := lstatSize(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, ""
	case err != nil:
		return false, fmt.Sprintf("stat .bin: %v", err)
	case !regular:
		return false, ".bin is not a regular file"
	case size != c.FileSize:
		return false, fmt.Sprintf(".bin is %d bytes, context says %d", size, c.FileSize)
	case c.ContentHash != "":
		return false, ""
	}
	// The seed's format has no hash: take it from the bytes, once (the rewrite records it).
	f, _, err := openRegular(path)
	if err != nil {
		return false, fmt.Sprintf("open .bin: %v", err)
	}
	defer f.Close()
	if c.ContentHash, err = hashFile(f); err != nil {
		return false, fmt.Sprintf("read .bin: %v", err)
	}
	return false, ""
}

// binPath is the absolute path of id's .bin, as file_path names it.
func (s *Store) binPath(id string) string { return s.dir + string(os.PathSeparator) + binName(id) }

// currentMeta is m as the store writes it for the asset c: file_path the absolute path of the
// .bin in this store, the hash in the content-hash header, no secret headers, and the tagged
// context.
func (s *Store) currentMeta(m Meta, c Context) (Meta, error) {
	ctx, err := encodeContext(c)
	if err != nil {
		return m, fmt.Errorf("encode context: %w", err)
	}
	m.FilePath = s.binPath(m.ID)
	m.Headers = diskHeaders(m.Headers, c.ContentHash)
	m.Context = ctx
	return m, nil
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
