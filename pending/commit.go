package pending

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

// A Draft is a new entry's bytes being written, as <id>.bin in the store folder (a .bin without
// its .json is no entry yet; Open removes one a crash left, after a minute). The caller writes
// the bytes, fills in Context (complete, with the hash of the bytes), TargetURL and Headers, and
// hands it to Commit; or drops it with Discard.
type Draft struct {
	id   string
	w    tempFile
	size int64

	Context   Context
	TargetURL string
	Headers   map[string]string

	meta  Meta // the new entry's starting metadata (times, attempts); set by NewDraft
	evict bool // whether the oldest entries may be evicted to make room
}

// NewDraft creates a draft for a new entry, created now.
func (s *Store) NewDraft() (*Draft, error) {
	if err := s.begin(true); err != nil {
		return nil, fmt.Errorf("new draft: %w", err)
	}
	defer s.life.RUnlock()
	id := uuid.NewString()
	f, err := os.OpenFile(s.path(binName(id)), os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return nil, fmt.Errorf("create draft: %w", err)
	}
	return &Draft{id: id, w: s.fs.Wrap(f), meta: Meta{CreatedAt: s.opts.Now().Unix()}, evict: true}, nil
}

// Write appends b to the draft's bytes.
func (d *Draft) Write(b []byte) (int, error) {
	n, err := d.w.Write(b)
	d.size += int64(n)
	return n, err
}

// Reader opens the bytes written so far for reading; the caller closes it.
func (d *Draft) Reader() (io.ReadCloser, error) { return os.Open(d.w.Name()) }

// Size returns the number of bytes written.
func (d *Draft) Size() int64 { return d.size }

// Discard removes the draft's file. Commit calls it for every draft it does not commit.
func (d *Draft) Discard() {
	_ = d.w.Close()
	_ = os.Remove(d.w.Name())
}

// Committed is what became of one draft in Commit.
type Committed struct {
	Entry Entry
	// Created is false when an entry already held (key, hash): Entry is that one, and the draft
	// was dropped.
	Created bool
	Err     error
}

// Commit turns drafts into entries, in two steps that SPEC §6's commit is split into. Here, each
// draft's .json is written beside its .bin (to a temp file, renamed into place), without an
// fsync: from now on a crash of the process loses nothing, since the kernel has the bytes, and a
// later capture of the same asset is recognised. Sync then makes the entries durable against a
// power cut, and only synced entries are listed for upload.
//
// Every draft is used up: committed, or removed with its error in the result. A draft whose
// (key, hash) an entry already holds is dropped with Created false. When the store is at
// MaxFiles or MaxBytes, the oldest entries are evicted first, each logged.
func (s *Store) Commit(drafts []*Draft) []Committed {
	out := make([]Committed, len(drafts))
	if err := s.begin(true); err != nil {
		for i, d := range drafts {
			d.Discard()
			out[i].Err = fmt.Errorf("commit %s: %w", d.Context.Key, err)
		}
		return out
	}
	defer s.life.RUnlock()
	// The .json files are written at once, at most maxParallelSyncs: where a new file costs
	// milliseconds (Windows), one after another would keep a batch's last captures waiting
	// for the rest. Claims, room and renames then go in the batch's order, one at a time.
	tmps := make([]string, len(drafts))
	errs := make([]error, len(drafts))
	sem := make(chan struct{}, maxParallelSyncs)
	var wg sync.WaitGroup
	for i, d := range drafts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			tmps[i], errs[i] = s.writeDraftMeta(d)
		})
	}
	wg.Wait()
	for i, d := range drafts {
		if errs[i] == nil {
			out[i] = s.place(d, tmps[i])
		} else {
			out[i].Err = errs[i]
		}
		if out[i].Err != nil {
			out[i].Err = fmt.Errorf("commit %s: %w", d.Context.Key, out[i].Err)
			d.Discard()
			s.logSaveError(d.Context.Key, out[i].Err)
		}
	}
	return out
}

// writeDraftMeta checks d and writes its .json to a temp file, returning the file's path.
func (s *Store) writeDraftMeta(d *Draft) (string, error) {
	if err := d.w.Close(); err != nil {
		return "", fmt.Errorf("close draft: %w", err)
	}
	if err := checkContext(d.Context); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if d.size != d.Context.FileSize {
		return "", fmt.Errorf("%w: %d bytes written, context says %d", ErrMismatch, d.size, d.Context.FileSize)
	}
	m := d.meta
	m.ID, m.TargetURL, m.Headers = d.id, d.TargetURL, d.Headers
	m, err := s.currentMeta(m, d.Context)
	var data []byte
	if err == nil {
		data, err = encodeMeta(m)
	}
	switch {
	case err != nil:
		return "", fmt.Errorf("encode metadata: %w", err)
	case len(data) > maxMetaBytes:
		return "", fmt.Errorf("%w: metadata is %d bytes, over the %d byte limit", ErrInvalid, len(data), maxMetaBytes)
	}
	d.meta = m
	return s.writeTempBytes(s.dir, data, false)
}

// place makes d an entry: it claims (key, hash), makes room, renames the .json written to tmp
// into place and indexes the entry, unsynced. A draft of an asset an entry holds is dropped.
func (s *Store) place(d *Draft, tmp string) Committed {
	dup, release := s.reserve(d.Context.Key, d.Context.ContentHash)
	if dup != nil {
		_ = os.Remove(tmp)
		_ = os.Remove(d.w.Name())
		return Committed{Entry: dup.snapshotSafe(s)}
	}
	defer release()
	err := s.makeRoom(d.size, d.evict)
	if err == nil {
		defer s.unreserveRoom(d.size)
		if err = os.Rename(tmp, s.path(d.id+".json")); err != nil {
			err = fmt.Errorf("rename .json: %w", err)
		}
	}
	if err != nil {
		_ = os.Remove(tmp)
		return Committed{Err: err}
	}
	e := &entry{e: Entry{Meta: d.meta, Context: d.Context}, unsynced: true}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.insertLocked(e)
	s.unsynced = append(s.unsynced, e)
	return Committed{Entry: e.snapshot(), Created: true}
}

// maxParallelSyncs bounds the files Sync flushes at once.
const maxParallelSyncs = 16

// Sync makes every entry Commit wrote since the last Sync durable: each .bin and .json is
// fsync'd, the flushes running at once (the disk serves concurrent flushes together), then one
// fsync of the folder makes their names durable. It returns those entries, now listed for
// upload. On a failure the entries stay unsynced, for the next Sync.
func (s *Store) Sync() ([]Entry, error) {
	if err := s.begin(true); err != nil {
		return nil, fmt.Errorf("sync: %w", err)
	}
	defer s.life.RUnlock()
	s.syncMu.Lock() // one Sync at a time, so that a failed one's entries are not lost to another
	defer s.syncMu.Unlock()
	s.mu.Lock()
	batch := s.unsynced
	s.unsynced = nil
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil, nil
	}
	err := s.syncFiles(batch)
	if err == nil {
		if err = s.fs.SyncDir(s.dir); err != nil {
			err = fmt.Errorf("sync folder: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.unsynced = append(batch, s.unsynced...)
		return nil, err
	}
	var out []Entry
	for _, e := range batch {
		e.unsynced = false
		if !e.gone {
			out = append(out, e.snapshot())
		}
	}
	return out, nil
}

// syncFiles fsyncs the .bin and .json of every entry of batch still in the store, at most
// maxParallelSyncs at once, and returns the first error.
func (s *Store) syncFiles(batch []*entry) error {
	sem := make(chan struct{}, maxParallelSyncs)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for _, e := range batch {
		for _, name := range []string{binName(e.e.ID), e.e.ID + ".json"} {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				err := s.fs.SyncFile(s.path(name))
				if err != nil && !errors.Is(err, fs.ErrNotExist) { // gone: deleted meanwhile
					select {
					case errs <- fmt.Errorf("sync %s: %w", name, err):
					default:
					}
				}
			})
		}
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// Unsynced returns the number of entries Commit wrote that no Sync has made durable yet.
func (s *Store) Unsynced() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.unsynced)
}

// reserve claims (key, hash) for one commit. If an entry already holds it, reserve returns that
// entry; if another commit holds the claim, reserve waits for it to end and looks again.
// Otherwise the caller must call release when its commit ends, done or not.
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

// logSaveError logs a failed commit; the proxy carries on, so the log is the record.
func (s *Store) logSaveError(key string, err error) {
	if err == nil || errors.Is(err, ErrClosed) || errors.Is(err, ErrReadOnly) {
		return
	}
	s.log.Error("Failed to save pending upload", zap.String("key", key), zap.Error(err))
}
