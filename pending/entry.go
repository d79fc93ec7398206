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
	if err := s.removePair(id, e.size()); err != nil {
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

// discardReason says why Cleanup would discard e at now, or "". mu must be held.
func (s *Store) discardReason(e *entry, now time.Time) string {
	if ttl := s.opts.TTL; ttl > 0 && !now.Before(e.e.Created().Add(ttl)) {
		return ReasonExpired
	}
	if n := s.opts.MaxAttempts; n > 0 && e.e.AttemptCount >= n {
		return ReasonMaxAttempts
	}
	return ""
}

// Cleanup discards the entries that are at least TTL old (expired) or have MaxAttempts attempts
// (max_attempts), each logged "Discarded pending upload" with its reason, and returns them.
// Entries held by TryHold or busy in another call are left for the next Cleanup. Unsupported
// entries go only when expired.
func (s *Store) Cleanup(now time.Time) []Discarded {
	if err := s.begin(true); err != nil {
		return nil
	}
	defer s.life.RUnlock()
	victims, reasons := s.pick(func(e *entry) string { return s.discardReason(e, now) })
	var out []Discarded
	for i, v := range victims {
		d := Discarded{ID: v.e.ID, Key: v.e.Context.Key, Reason: reasons[i]}
		if s.discardLocked(v, reasons[i]) {
			out = append(out, d)
		}
	}
	return append(out, s.expireUnsupported(now)...)
}

// expireUnsupported removes the unsupported entries that are at least TTL old, .json first.
func (s *Store) expireUnsupported(now time.Time) []Discarded {
	s.mu.Lock()
	ttl := s.opts.TTL
	var expired []Entry
	s.unsupported = slices.DeleteFunc(s.unsupported, func(e Entry) bool {
		old := ttl > 0 && !now.Before(e.Created().Add(ttl))
		if old {
			expired = append(expired, e)
		}
		return old
	})
	s.mu.Unlock()
	var out []Discarded
	for _, e := range expired {
		fields := []zap.Field{zap.String("id", e.ID), zap.String("kind", e.Unsupported), zap.String("reason", ReasonExpired)}
		err := removeIfExists(s.path(e.ID + ".json"))
		if err == nil {
			err = removeIfExists(s.path(binName(e.ID)))
		}
		if err != nil {
			s.log.Error("Failed to discard pending upload", append(fields, zap.Error(err))...)
			continue
		}
		s.log.Warn("Discarded pending upload", fields...)
		out = append(out, Discarded{ID: e.ID, Reason: ReasonExpired})
	}
	return out
}

// pick returns, oldest first, the entries for which why returns a reason and that are neither
// held nor busy, with their io locks held.
func (s *Store) pick(why func(*entry) string) (victims []*entry, reasons []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.order {
		if e.gone || e.held {
			continue
		}
		if r := why(e); r != "" && e.io.TryLock() { // TryLock: see makeRoom
			victims = append(victims, e)
			reasons = append(reasons, r)
		}
	}
	return victims, reasons
}

// Purge removes every entry to upload (all) or those Cleanup would discard now, for `fusou-proxy
// pending purge`; unsupported entries go only with the latter, when expired. progress, if not
// nil, is called with (0, total) and after each removal. Held entries are skipped. It stops at
// the first error and returns how many entries it removed.
func (s *Store) Purge(all bool, progress func(done, total int)) (int, error) {
	if err := s.begin(true); err != nil {
		return 0, fmt.Errorf("purge: %w", err)
	}
	defer s.life.RUnlock()
	now := s.opts.Now()
	victims, _ := s.pick(func(e *entry) string {
		if all {
			return "purge"
		}
		return s.discardReason(e, now)
	})
	if progress != nil {
		progress(0, len(victims))
	}
	var err error
	done := 0
	for _, v := range victims {
		if err == nil {
			if err = s.removePair(v.e.ID, v.size()); err != nil {
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
	if !all && err == nil {
		done += len(s.expireUnsupported(now)) // TTL is the one thing that removes them
	}
	if done > 0 {
		if serr := s.fs.SyncDir(s.dir); serr != nil && err == nil {
			err = fmt.Errorf("purge: sync folder: %w", serr)
		}
	}
	s.log.Info("Purged pending uploads", zap.Int("removed", done), zap.Bool("all", all))
	return done, err
}
