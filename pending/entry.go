package pending

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"time"

	"go.uber.org/zap"
)

// Open returns the entry's bytes for upload, positioned at the start. It first checks that the
// .bin is a regular file of the context's size whose SHA-256 matches content_hash; if not, the
// entry is moved to corrupt/ (logged) and the error wraps ErrCorrupt. The caller closes the
// reader; it stays readable if the entry is deleted meanwhile.
func (s *Store) Open(id string) (io.ReadSeekCloser, error) {
	if err := s.begin(false); err != nil {
		return nil, fmt.Errorf("open %s: %w", id, err)
	}
	defer s.life.RUnlock()
	s.mu.Lock()
	e := s.byID[id]
	var want Context
	if e != nil {
		want = e.e.Context
	}
	s.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("open %s: %w", id, ErrNotFound)
	}

	f, fi, err := openRegular(s.path(binName(id)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, s.corrupt(e, "the .bin is missing")
		}
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("open %s: %w", id, err)
		}
		return nil, s.corrupt(e, err.Error())
	}
	if fi.Size() != want.FileSize {
		_ = f.Close()
		return nil, s.corrupt(e, fmt.Sprintf(".bin is %d bytes, context says %d", fi.Size(), want.FileSize))
	}
	sum, err := hashFile(f)
	if err == nil && sum != want.ContentHash {
		_ = f.Close()
		return nil, s.corrupt(e, fmt.Sprintf(".bin has sha256 %s, context says %s", sum, want.ContentHash))
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("open %s: read .bin: %w", id, err)
	}
	return f, nil
}

// corrupt moves e to corrupt/ (unless read-only), logs it and returns the error for the caller.
func (s *Store) corrupt(e *entry, detail string) error {
	s.mu.Lock()
	r := &scanned{stem: e.e.ID, ctx: e.e.Context, problem: detail}
	s.mu.Unlock()
	err := fmt.Errorf("open %s: %w: %s", r.stem, ErrCorrupt, detail)
	if s.opts.ReadOnly {
		s.moveToCorrupt(r) // logs only
		return err
	}
	e.io.Lock()
	defer e.io.Unlock()
	s.mu.Lock()
	removed := s.removeLocked(e)
	s.mu.Unlock()
	if !removed {
		// Deleted or rejected meanwhile: its files went with it, so nothing is corrupt.
		return fmt.Errorf("open %s: %w", r.stem, ErrNotFound)
	}
	s.moveToCorrupt(r)
	return err
}

// RecordAttempt records a failed upload attempt: attempt_count+1, last_attempt_at = at and
// last_error (cut to 4 KiB), rewritten atomically. notBefore is kept in memory only, as a
// Retry-After hint (Entry.NotBefore).
func (s *Store) RecordAttempt(id string, at time.Time, lastErr string, notBefore time.Time) (Entry, error) {
	if err := s.begin(true); err != nil {
		return Entry{}, fmt.Errorf("record attempt on %s: %w", id, err)
	}
	defer s.life.RUnlock()
	e, err := s.acquire(id)
	if err != nil {
		return Entry{}, fmt.Errorf("record attempt on %s: %w", id, err)
	}
	defer e.io.Unlock()

	m := e.e.Meta // e.io is held, so no one else writes it
	m.AttemptCount++
	m.LastAttemptAt = at.Unix()
	m.LastError = truncate(lastErr, maxErrorBytes)
	if err := s.writeMeta(m); err != nil {
		return Entry{}, fmt.Errorf("record attempt on %s: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e.e.Meta = m
	e.e.NotBefore = notBefore
	return e.snapshot(), nil
}

// Delete removes an entry, after its upload succeeded.
func (s *Store) Delete(id string) error {
	if err := s.begin(true); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	defer s.life.RUnlock()
	e, err := s.acquire(id)
	if err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	defer e.io.Unlock()
	s.mu.Lock()
	s.removeLocked(e)
	s.mu.Unlock()
	if err := s.removePair(id); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}

// Reject moves an entry the server refused for good to rejected/, with reason (cut to 4 KiB) in
// its last_error. It is never retried.
func (s *Store) Reject(id, reason string) error {
	if err := s.begin(true); err != nil {
		return fmt.Errorf("reject %s: %w", id, err)
	}
	defer s.life.RUnlock()
	e, err := s.acquire(id)
	if err != nil {
		return fmt.Errorf("reject %s: %w", id, err)
	}
	defer e.io.Unlock()

	m := e.e.Meta
	m.LastError = truncate(reason, maxErrorBytes)
	m.FilePath = s.path(rejectedDir, binName(id))
	data, err := encodeMeta(m)
	if err != nil {
		return fmt.Errorf("reject %s: encode metadata: %w", id, err)
	}
	// Order matters for a crash: the rejected .json first (until the .bin moves, the entry is
	// still pending and would only be rejected again), then the .bin, then the pending .json,
	// whose removal ends the entry here. A crash between the last two leaves a pending .json
	// without its .bin, which Open recognises and finishes (rejectedComplete).
	dir := s.path(rejectedDir)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("reject %s: create rejected folder: %w", id, err)
	}
	if err := s.replaceFile(dir, id+".json", data); err != nil {
		return fmt.Errorf("reject %s: %w", id, err)
	}
	if err := os.Rename(s.path(binName(id)), s.path(rejectedDir, binName(id))); err != nil {
		return fmt.Errorf("reject %s: move .bin: %w", id, err)
	}
	s.mu.Lock()
	s.removeLocked(e)
	s.mu.Unlock()
	if err := removeIfExists(s.path(id + ".json")); err != nil {
		return fmt.Errorf("reject %s: remove .json: %w", id, err)
	}
	if err := s.fs.SyncDir(dir); err != nil {
		return fmt.Errorf("reject %s: sync rejected folder: %w", id, err)
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("reject %s: sync folder: %w", id, err)
	}
	s.log.Info("Rejected pending upload", zap.String("id", id), zap.String("key", e.e.Context.Key),
		zap.String("reason", m.LastError))
	return nil
}

// Discard removes an entry that is no longer to be tried (why: ReasonExpired, ReasonMaxAttempts),
// logging "Discarded pending upload" (SPEC §7). It also removes an unsupported entry. An entry held
// by TryHold or busy in another call is left alone: ErrHeld.
func (s *Store) Discard(id, why string) error {
	if err := s.begin(true); err != nil {
		return fmt.Errorf("discard %s: %w", id, err)
	}
	defer s.life.RUnlock()
	if found, err := s.discardUnsupported(id, why); found {
		return err
	}
	s.mu.Lock()
	e := s.byID[id]
	switch {
	case e == nil:
		s.mu.Unlock()
		return fmt.Errorf("discard %s: %w", id, ErrNotFound)
	case e.held || !e.io.TryLock(): // TryLock: see makeRoom
		s.mu.Unlock()
		return fmt.Errorf("discard %s: %w", id, ErrHeld)
	}
	s.mu.Unlock()
	if !s.discardLocked(e, why) {
		return fmt.Errorf("discard %s: could not remove its files", id)
	}
	return nil
}

// discardUnsupported removes the unsupported entry id, .json first, and reports whether there
// was one.
func (s *Store) discardUnsupported(id, why string) (found bool, err error) {
	s.mu.Lock()
	i := slices.IndexFunc(s.unsupported, func(e Entry) bool { return e.ID == id })
	if i < 0 {
		s.mu.Unlock()
		return false, nil
	}
	e := s.unsupported[i]
	s.unsupported = slices.Delete(s.unsupported, i, i+1)
	s.mu.Unlock()
	fields := []zap.Field{zap.String("id", e.ID), zap.String("kind", e.Unsupported), zap.String("reason", why)}
	if err := s.removePair(e.ID); err != nil {
		s.log.Error("Failed to discard pending upload", append(fields, zap.Error(err))...)
		s.mu.Lock()
		s.unsupported = append(s.unsupported, e) // still there: kept for the next try
		slices.SortFunc(s.unsupported, func(a, b Entry) int { return compareAge(a.Meta, b.Meta) })
		s.mu.Unlock()
		return true, fmt.Errorf("discard %s: %w", id, err)
	}
	s.log.Warn("Discarded pending upload", fields...)
	return true, nil
}

// Purge removes every entry to upload, for `fusou-proxy pending purge --all`. progress, if not
// nil, is called with (0, total) and after each removal. Held entries are skipped. It stops at
// the first error and returns how many entries it removed.
func (s *Store) Purge(progress func(done, total int)) (int, error) {
	if err := s.begin(true); err != nil {
		return 0, fmt.Errorf("purge: %w", err)
	}
	defer s.life.RUnlock()
	victims := s.pickIdle()
	if progress != nil {
		progress(0, len(victims))
	}
	var err error
	done := 0
	for _, v := range victims {
		if err == nil {
			if err = s.removePair(v.e.ID); err != nil {
				err = fmt.Errorf("purge %s: %w", v.e.ID, err)
			} else {
				s.mu.Lock()
				s.removeLocked(v)
				s.mu.Unlock()
				done++
				if progress != nil {
					progress(done, len(victims))
				}
			}
		}
		v.io.Unlock()
	}
	if done > 0 {
		if serr := s.fs.SyncDir(s.dir); serr != nil && err == nil {
			err = fmt.Errorf("purge: sync folder: %w", serr)
		}
	}
	s.log.Info("Purged pending uploads", zap.Int("removed", done))
	return done, err
}

// pickIdle returns, oldest first, the entries that are neither held nor busy, with their io
// locks held.
func (s *Store) pickIdle() []*entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*entry
	for _, e := range s.order {
		if !e.gone && !e.held && e.io.TryLock() { // TryLock: see makeRoom
			out = append(out, e)
		}
	}
	return out
}

// discardLocked removes the files of v, then takes it out of the index (if makeRoom has not
// already), and logs the discard; it reports whether the files are gone. v.io must be held;
// discardLocked releases it.
func (s *Store) discardLocked(v *entry, reason string) bool {
	defer v.io.Unlock()
	fields := []zap.Field{zap.String("id", v.e.ID), zap.String("key", v.e.Context.Key), zap.String("reason", reason)}
	if err := s.removePair(v.e.ID); err != nil {
		s.log.Error("Failed to discard pending upload", append(fields, zap.Error(err))...)
		return false
	}
	s.mu.Lock()
	s.removeLocked(v)
	s.mu.Unlock()
	s.log.Warn("Discarded pending upload", fields...)
	return true
}

// removePair removes <id>.json, which ends the entry, then <id>.bin. The folder is not fsync'd: a
// removal lost in a crash only brings the entry back, and its upload is then answered 409.
func (s *Store) removePair(id string) error {
	if err := removeIfExists(s.path(id + ".json")); err != nil {
		return err
	}
	return removeIfExists(s.path(binName(id)))
}

// rewriteMeta atomically rewrites <id>.json, leaving the folder's fsync to the caller: temp file,
// fsync, rename.
func (s *Store) rewriteMeta(m Meta) error {
	data, err := encodeMeta(m)
	if err != nil {
		return fmt.Errorf("encode metadata: %w", err)
	}
	tmp, err := s.writeTempBytes(s.dir, data, true)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path(m.ID+".json")); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("rename temp file: %w", err)
	}
	return nil
}

// writeMeta atomically rewrites <id>.json.
func (s *Store) writeMeta(m Meta) error {
	data, err := encodeMeta(m)
	if err != nil {
		return fmt.Errorf("encode metadata: %w", err)
	}
	return s.replaceFile(s.dir, m.ID+".json", data)
}
