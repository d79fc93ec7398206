package pending

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

// Save commits the bytes read from body as a new entry and returns it with created=true. The bytes
// are streamed to disk, never held whole in memory.
//
// If c.ContentHash is set, the bytes must match it and c.FileSize (else ErrMismatch), and when an
// entry already holds (c.Key, c.ContentHash) that entry is returned with created=false without
// reading body. If c.ContentHash is empty, both are computed from the bytes.
//
// Secret headers (Authorization, Cookie, ...) are dropped. When the store is at MaxFiles or
// MaxBytes, the oldest entries are evicted first, each logged. A failure (a full disk, say) is
// logged and leaves no file behind.
func (s *Store) Save(c Context, targetURL string, headers map[string]string, body io.Reader) (_ Entry, created bool, err error) {
	return s.save(c, s.newMeta(targetURL, headers), body, true)
}

// newMeta is the template of a new entry's metadata: created now, never attempted.
func (s *Store) newMeta(targetURL string, headers map[string]string) Meta {
	return Meta{TargetURL: targetURL, Headers: headers, CreatedAt: s.opts.Now().Unix()}
}

// save is Save of an entry whose metadata starts as tmpl; evict says whether the oldest entries
// may be evicted to make room (see commit).
func (s *Store) save(c Context, tmpl Meta, body io.Reader, evict bool) (_ Entry, created bool, err error) {
	if err := s.begin(true); err != nil {
		return Entry{}, false, fmt.Errorf("save %s: %w", c.Key, err)
	}
	defer s.life.RUnlock()
	defer func() { s.logSaveError(c.Key, err) }()

	known := c.ContentHash != ""
	if c.Key == "" {
		return Entry{}, false, fmt.Errorf("save: %w: context has no key", ErrInvalid)
	}
	if known {
		if err := checkContext(c); err != nil {
			return Entry{}, false, fmt.Errorf("save %s: %w: %v", c.Key, ErrInvalid, err)
		}
		dup, release := s.reserve(c.Key, c.ContentHash)
		if dup != nil {
			return dup.snapshotSafe(s), false, nil
		}
		defer release()
		// One byte more than promised is enough to tell a mismatch; a wrong size must not
		// fill the disk.
		body = io.LimitReader(body, c.FileSize+1)
	}

	tmp, size, sum, err := s.writeTemp(body)
	if err != nil {
		return Entry{}, false, fmt.Errorf("save %s: %w", c.Key, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.Remove(tmp)
		}
	}()

	if known {
		if size != c.FileSize || sum != c.ContentHash {
			return Entry{}, false, fmt.Errorf("save %s: %w: got %d bytes with sha256 %s, want %d bytes with %s",
				c.Key, ErrMismatch, size, sum, c.FileSize, c.ContentHash)
		}
	} else {
		c.FileSize, c.ContentHash = size, sum
		dup, release := s.reserve(c.Key, c.ContentHash)
		if dup != nil {
			return dup.snapshotSafe(s), false, nil
		}
		defer release()
	}

	e, err := s.commit(c, tmpl, tmp, false, evict)
	if err != nil {
		return Entry{}, false, fmt.Errorf("save %s: %w", c.Key, err)
	}
	committed = true
	return e, true, nil
}

// Adopt commits the finished file at path as a new entry's .bin by renaming it into the store (no
// copy; path must be on the same file system, e.g. the data directory's spool/). The file is
// fsync'd first. c must be complete, and the file's size must match c.FileSize; its hash is
// trusted (it is checked when the entry is opened for upload).
//
// When an entry already holds (c.Key, c.ContentHash), the file is removed and that entry is
// returned with created=false. On any other failure the file is left at path.
func (s *Store) Adopt(c Context, targetURL string, headers map[string]string, path string) (_ Entry, created bool, err error) {
	if err := s.begin(true); err != nil {
		return Entry{}, false, fmt.Errorf("adopt %s: %w", c.Key, err)
	}
	defer s.life.RUnlock()
	defer func() { s.logSaveError(c.Key, err) }()

	if err := checkContext(c); err != nil {
		return Entry{}, false, fmt.Errorf("adopt %s: %w: %v", c.Key, ErrInvalid, err)
	}
	dup, release := s.reserve(c.Key, c.ContentHash)
	if dup != nil {
		if err := os.Remove(path); err != nil {
			return Entry{}, false, fmt.Errorf("adopt %s: remove duplicate file: %w", c.Key, err)
		}
		return dup.snapshotSafe(s), false, nil
	}
	defer release()

	if err := syncFile(path, c.FileSize); err != nil {
		return Entry{}, false, fmt.Errorf("adopt %s: %w", c.Key, err)
	}
	e, err := s.commit(c, s.newMeta(targetURL, headers), path, true, true)
	if err != nil {
		return Entry{}, false, fmt.Errorf("adopt %s: %w", c.Key, err)
	}
	return e, true, nil
}

// syncFile checks that path is a regular file of want bytes, makes it 0600 and fsyncs it.
func syncFile(path string, want int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat file: %w", err)
	}
	if li, err := os.Lstat(path); err != nil || !li.Mode().IsRegular() || !os.SameFile(li, fi) {
		return fmt.Errorf("%w: %s is not a regular file", ErrInvalid, path)
	}
	if fi.Size() != want {
		return fmt.Errorf("%w: file has %d bytes, context says %d", ErrMismatch, fi.Size(), want)
	}
	if err := f.Chmod(fileMode); err != nil {
		return fmt.Errorf("chmod file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync file: %w", err)
	}
	return f.Close()
}

// commit turns the fsync'd file src into <id>.bin and writes <id>.json beside it (SPEC §6): both
// are durable in temp or source files before either rename, the .json rename commits the entry,
// and one folder fsync makes both renames durable. On failure nothing of the entry is left, and
// an adopted src is put back. tmpl gives the new entry's target_url, headers, times, attempts
// and last error; its id, file_path and context are the store's. Without evict, a store at its
// limits fails with ErrFull instead of evicting its oldest entries.
func (s *Store) commit(c Context, tmpl Meta, src string, adopted, evict bool) (Entry, error) {
	id := uuid.NewString()
	tmpl.ID = id
	m, err := s.currentMeta(tmpl, c)
	if err != nil {
		return Entry{}, err
	}
	data, err := encodeMeta(m)
	if err != nil {
		return Entry{}, fmt.Errorf("encode metadata: %w", err)
	}
	if len(data) > maxMetaBytes {
		return Entry{}, fmt.Errorf("%w: metadata is %d bytes, over the %d byte limit", ErrInvalid, len(data), maxMetaBytes)
	}
	tmpJSON, err := s.writeTempBytes(s.dir, data)
	if err != nil {
		return Entry{}, err
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.Remove(tmpJSON)
		}
	}()

	if err := s.makeRoom(c.FileSize, evict); err != nil {
		return Entry{}, err
	}
	defer s.unreserveRoom(c.FileSize)

	bin := s.path(binName(id))
	if err := os.Rename(src, bin); err != nil {
		return Entry{}, fmt.Errorf("rename .bin: %w", err)
	}
	undo := func() {
		if adopted {
			_ = os.Rename(bin, src)
		} else {
			_ = os.Remove(bin)
		}
	}
	if err := os.Rename(tmpJSON, s.path(id+".json")); err != nil {
		undo()
		return Entry{}, fmt.Errorf("rename .json: %w", err)
	}
	committed = true
	if err := s.fs.SyncDir(s.dir); err != nil {
		// The entry may or may not survive a crash now; take it back so the caller's view
		// (not saved) is the truth.
		_ = os.Remove(s.path(id + ".json"))
		undo()
		return Entry{}, fmt.Errorf("sync folder: %w", err)
	}

	e := &entry{e: Entry{Meta: m, Context: c}}
	s.mu.Lock()
	s.insertLocked(e)
	out := e.snapshot()
	s.mu.Unlock()
	return out, nil
}

// reserve claims (key, hash) for one save. If an entry already holds it, reserve returns that
// entry; if another save holds the claim, reserve waits for it to end and looks again. Otherwise
// the caller must call release when its save ends, committed or not.
func (s *Store) reserve(key, hash string) (dup *entry, release func()) {
	k := keyHash{key, hash}
	for {
		s.mu.Lock()
		if e := s.byKey[k]; e != nil {
			s.mu.Unlock()
			return e, nil
		}
		ch, busy := s.inflight[k]
		if !busy {
			ch = make(chan struct{})
			s.inflight[k] = ch
			s.mu.Unlock()
			return nil, func() {
				s.mu.Lock()
				delete(s.inflight, k)
				s.mu.Unlock()
				close(ch)
			}
		}
		s.mu.Unlock()
		<-ch
	}
}

// snapshotSafe is snapshot for a caller that does not hold mu.
func (e *entry) snapshotSafe(s *Store) Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return e.snapshot()
}

// makeRoom reserves space for a new entry of size bytes, evicting (if evict) the oldest entries
// that are not being uploaded (SPEC §6) until the limits hold. The caller must unreserveRoom(size)
// once the entry is committed or abandoned.
func (s *Store) makeRoom(size int64, evict bool) error {
	s.mu.Lock()
	maxFiles, maxBytes := s.opts.MaxFiles, s.opts.MaxBytes // SetLimits changes them under mu
	if maxBytes > 0 && size > maxBytes {
		s.mu.Unlock()
		return fmt.Errorf("%w: entry of %d bytes is over max_pending_bytes %d", ErrFull, size, maxBytes)
	}
	files := len(s.byID) + s.reservedFiles + 1
	total := s.bytes + s.reservedBytes + size
	over := func() bool {
		return (maxFiles > 0 && files > maxFiles) || (maxBytes > 0 && total > maxBytes)
	}
	if !evict && over() {
		s.mu.Unlock()
		return fmt.Errorf("%w: max_pending_files %d or max_pending_bytes %d reached", ErrFull, maxFiles, maxBytes)
	}
	var victims []*entry
	for _, v := range s.order {
		if !over() {
			break
		}
		// TryLock: an entry busy in another call is skipped rather than waited for, and
		// cannot be waited for here without breaking the io-before-mu lock order.
		if v.gone || v.held || !v.io.TryLock() {
			continue
		}
		victims = append(victims, v)
		files--
		total -= v.size()
	}
	if over() {
		for _, v := range victims {
			v.io.Unlock()
		}
		s.mu.Unlock()
		return fmt.Errorf("%w: no room for %d more bytes with every other entry in use", ErrFull, size)
	}
	for _, v := range victims {
		s.removeLocked(v)
	}
	s.reservedFiles++
	s.reservedBytes += size
	s.mu.Unlock()

	for _, v := range victims {
		s.discardLocked(v, ReasonCapacity)
	}
	return nil
}

func (s *Store) unreserveRoom(size int64) {
	s.mu.Lock()
	s.reservedFiles--
	s.reservedBytes -= size
	s.mu.Unlock()
}

// discardLocked removes the files of v, then takes it out of the index (if makeRoom has not
// already), and logs the discard; it reports whether the files are gone. v.io must be held; discardLocked releases it.
func (s *Store) discardLocked(v *entry, reason string) bool {
	defer v.io.Unlock()
	fields := []zap.Field{zap.String("id", v.e.ID), zap.String("key", v.e.Context.Key), zap.String("reason", reason)}
	if err := s.removePair(v.e.ID, v.size()); err != nil {
		s.log.Error("Failed to discard pending upload", append(fields, zap.Error(err))...)
		return false
	}
	s.mu.Lock()
	s.removeLocked(v)
	s.mu.Unlock()
	s.log.Warn("Discarded pending upload", fields...)
	return true
}

// removePair removes <id>.json, which ends the entry, then <id>.bin of size bytes; both may be
// kept as spares (spare.go). The folder is not fsync'd: a removal lost in a crash only brings the
// entry back, and its upload is then answered 409.
func (s *Store) removePair(id string, size int64) error {
	if err := s.retire(s.path(id+".json"), 0); err != nil {
		return err
	}
	return s.retire(s.path(binName(id)), size)
}

// rewriteMeta atomically rewrites <id>.json, leaving the folder's fsync to the caller: temp file,
// fsync, rename.
func (s *Store) rewriteMeta(m Meta) error {
	data, err := encodeMeta(m)
	if err != nil {
		return fmt.Errorf("encode metadata: %w", err)
	}
	tmp, err := s.writeTempBytes(s.dir, data)
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

// logSaveError logs a failed Save or Adopt; the proxy carries on, so the log is the record.
func (s *Store) logSaveError(key string, err error) {
	if err == nil || errors.Is(err, ErrClosed) || errors.Is(err, ErrReadOnly) {
		return
	}
	s.log.Error("Failed to save pending upload", zap.String("key", key), zap.Error(err))
}
