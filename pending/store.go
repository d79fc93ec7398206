// Package pending is fusou-proxy's durable outbox: the folder of captured assets that are not yet
// uploaded (SPEC §6). Every capture is committed here, fsync'd, before its first upload starts; a
// successful upload deletes the entry and a failed one stays with its reason for the retry
// service, so a crash at any moment after the commit loses nothing.
//
// Start with Open, which takes the folder's lock, sweeps up what a crash left behind and indexes
// every entry's metadata in memory. Commit makes Drafts entries, in batches (Save is a Commit of
// one); List, Get, Stats and Has
// answer from the index without touching the .bin files; Open (the method) hands an entry's bytes
// to the uploader after checking their SHA-256; RecordAttempt, Delete and Reject record the
// outcome; Discard and Purge remove what should no longer be retried. TryHold is an in-memory lease
// so that a live upload and a retry pass never send one entry twice at once.
//
// On disk an entry is <id>.bin (the bytes) and <id>.json (Meta), in the FUSOU desktop app's own
// format so that entries move between the two programs (SPEC §6, docs/FORMATS.md). Open also
// reads the app's older formats and this program's earlier one, rewriting them in the current
// format; entries whose context is not an asset are kept aside, untouched (Unsupported), and
// Import copies the app's entries in. The store also keeps, in memory only, a Retry-After hint
// per entry (Entry.NotBefore): the SPEC's JSON has no field for it, so it is forgotten on
// restart and the retry service falls back to its own backoff.
//
// Only this package opens files in the folder; the rest of the program goes through a Store.
package pending

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"strconv"
	"strings"
)

// File names inside the store folder.
const (
	lockName     = ".lock"
	tempPrefix   = ".tmp-"
	rejectedDir  = "rejected"
	corruptDir   = "corrupt"
	orphanMinAge = time.Minute // a .bin without .json younger than this is left alone at open
	dirMode      = 0o700
	fileMode     = 0o600
)

// Options configures a Store. The zero value of every field but Dir works.
type Options struct {
	// Dir is the store folder, <data_dir>/pending_uploads. It is created (0700) unless ReadOnly.
	Dir string
	// MaxFiles caps the number of entries (max_pending_files); a commit that would pass it
	// evicts the oldest. 0 means no cap.
	MaxFiles int
	// MaxBytes caps the total size of the .bin files (max_pending_bytes), like MaxFiles.
	MaxBytes int64
	// ReadOnly opens the store without its lock and without changing anything on disk, for
	// `pending list/show` while the proxy runs. Calls that would change the store fail with
	// ErrReadOnly; unreadable entries are skipped and logged instead of moved.
	ReadOnly bool
	// Logger receives the store's log lines. nil means zap.NewNop().
	Logger *zap.Logger
	// Now is the clock, a test seam. nil means time.Now.
	Now func() time.Time

	// fs creates the temp files; tests swap it to inject faults such as ENOSPC. nil means osFS.
	fs fileSystem
}

// Stats summarises the store.
type Stats struct {
	Count  int
	Bytes  int64
	Oldest time.Time // zero when the store is empty
}

// Reasons logged with "Discarded pending upload" (SPEC §7).
const (
	ReasonExpired     = "expired"
	ReasonMaxAttempts = "max_attempts"
	ReasonCapacity    = "capacity"
	ReasonCorrupt     = "corrupt"
)

// Store is an open pending folder. Its methods are safe for concurrent use.
type Store struct {
	dir      string
	opts     Options
	log      *zap.Logger
	fs       fileSystem
	lockFile *os.File // nil when read-only

	// life guards closed. Every call that touches the disk holds it shared, and Close holds it
	// exclusively, so Close waits for those calls to finish.
	life   sync.RWMutex
	closed bool

	mu sync.Mutex // guards the fields below, every entry's state fields and opts' limits (SetLimits)
	// byID and byKey index the live entries; order holds them sorted oldest first by
	// (created_at, id), plus removed ones (gone) until the next compaction.
	byID  map[string]*entry
	byKey map[keyHash]*entry
	order []*entry
	dead  int   // removed entries still in order
	bytes int64 // total size of the live entries
	// inflight marks (key, hash) pairs being saved; the channel closes when that save ends.
	inflight map[keyHash]chan struct{}
	// reservedFiles and reservedBytes count saves that made room but have not committed yet.
	reservedFiles int
	reservedBytes int64
	// unsupported are the entries that are not assets (Entry.Unsupported), oldest first.
	unsupported []Entry
	// unsynced are the entries Commit wrote and no Sync has made durable yet; syncMu
	// serialises Sync.
	unsynced []*entry
	syncMu   sync.Mutex
}

type keyHash struct{ key, hash string }

// entry is the index's record of one entry.
type entry struct {
	// io serialises the file operations on this entry (rewrite, move, removal). Take it before
	// Store.mu, never while holding it, except with TryLock.
	io sync.Mutex

	// guarded by Store.mu
	e        Entry
	held     bool // leased by TryHold
	gone     bool // removed from the index; its files are being or have been removed
	unsynced bool // written by Commit, not yet made durable by Sync: not listed for upload
}

func (e *entry) size() int64 { return e.e.Context.FileSize }

// Open opens the store in opts.Dir. Unless ReadOnly, it takes the folder's lock (a second process
// gets ErrLocked at once), removes temp files and orphans, moves unreadable entries to corrupt/
// and logs each. It reads every .json but no .bin contents.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("open pending store: no folder given")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.fs == nil {
		opts.fs = osFS{}
	}

	// Absolute, because every .json names its .bin by absolute path (SPEC §6).
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("open pending store: %w", err)
	}
	s := &Store{
		dir:      dir,
		opts:     opts,
		log:      opts.Logger,
		fs:       opts.fs,
		byID:     make(map[string]*entry),
		byKey:    make(map[keyHash]*entry),
		inflight: make(map[keyHash]chan struct{}),
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(s.dir, dirMode); err != nil {
			return nil, fmt.Errorf("create pending folder: %w", err)
		}
		f, err := lockFolder(s.dir)
		if errors.Is(err, ErrLocked) {
			return nil, fmt.Errorf("lock pending folder %s: %w%s", s.dir, err, holder(s.dir))
		}
		if err != nil {
			return nil, fmt.Errorf("lock pending folder %s: %w", s.dir, err)
		}
		s.lockFile = f
		writeHolder(s.dir)
	}
	if err := s.load(); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("load pending folder %s: %w", s.dir, err)
	}
	return s, nil
}

// writeHolder records this process's pid in .lock, for the message a second owner gets. The
// lock itself is held on the folder (or on .lock where the folder cannot be locked), not on the
// file's existence.
func writeHolder(dir string) {
	_ = os.WriteFile(filepath.Join(dir, lockName), []byte(strconv.Itoa(os.Getpid())+"\n"), fileMode)
}

// holder names the pid recorded in .lock, or nothing.
func holder(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, lockName))
	if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && pid > 0 {
		return fmt.Sprintf(" (pid %d)", pid)
	}
	return ""
}

// Close makes the entries Commit wrote durable (Sync), waits for calls in progress and releases
// the lock. Readers returned by Open stay usable.
func (s *Store) Close() error {
	var syncErr error
	if !s.opts.ReadOnly {
		if _, err := s.Sync(); err != nil && !errors.Is(err, ErrClosed) {
			syncErr = fmt.Errorf("close: %w", err)
		}
	}
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.lockFile != nil {
		if err := s.lockFile.Close(); err != nil {
			return fmt.Errorf("close lock file: %w", err)
		}
	}
	return syncErr
}

// Dir returns the store folder.
func (s *Store) Dir() string { return s.dir }

// begin starts a call that touches the disk; on success the caller must s.life.RUnlock().
func (s *Store) begin(write bool) error {
	s.life.RLock()
	switch {
	case s.closed:
		s.life.RUnlock()
		return ErrClosed
	case write && s.opts.ReadOnly:
		s.life.RUnlock()
		return ErrReadOnly
	}
	return nil
}

// List returns every entry to upload, oldest first (created_at, then id): every entry but those
// Commit wrote that no Sync has made durable yet. It reads only memory.
func (s *Store) List() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Entry, 0, len(s.byID))
	for _, e := range s.order {
		if !e.gone && !e.unsynced {
			out = append(out, e.snapshot())
		}
	}
	return out
}

// Unsupported returns the entries whose context is not an asset (Entry.Unsupported says which),
// oldest first. They are never uploaded nor changed; the retry service discards them at their TTL.
func (s *Store) Unsupported() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Entry, len(s.unsupported))
	for i, e := range s.unsupported {
		out[i] = e
		out[i].Headers = maps.Clone(e.Headers)
	}
	return out
}

// Get returns one entry to upload, or ErrNotFound.
func (s *Store) Get(id string) (Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byID[id]
	if e == nil {
		return Entry{}, fmt.Errorf("get %s: %w", id, ErrNotFound)
	}
	return e.snapshot(), nil
}

// Has reports whether an entry holds (key, hash), so the caller can skip a capture it already has.
func (s *Store) Has(key, hash string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byKey[keyHash{key, hash}] != nil
}

// Stats returns the entry count, their total size and the oldest creation time.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Count: len(s.byID), Bytes: s.bytes}
	if e := s.oldestLocked(); e != nil {
		st.Oldest = e.e.Created()
	}
	return st
}

// TryHold leases an entry for one upload. It returns ok=false when the entry is unknown or
// already held; otherwise release ends the lease (calling it again does nothing). Held entries
// are skipped by eviction, Discard and Purge.
func (s *Store) TryHold(id string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byID[id]
	if e == nil || e.held {
		return nil, false
	}
	e.held = true
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			e.held = false
			s.mu.Unlock()
		})
	}, true
}

// snapshot copies e for a caller. mu must be held.
func (e *entry) snapshot() Entry {
	out := e.e
	out.Headers = maps.Clone(e.e.Headers)
	return out
}

func entryLess(a, b *Entry) bool {
	if a.CreatedAt != b.CreatedAt {
		return a.CreatedAt < b.CreatedAt
	}
	return a.ID < b.ID
}

// insertLocked adds e to the index. mu must be held.
func (s *Store) insertLocked(e *entry) {
	s.byID[e.e.ID] = e
	k := keyHash{e.e.Context.Key, e.e.Context.ContentHash}
	if s.byKey[k] == nil {
		s.byKey[k] = e
	}
	s.bytes += e.size()
	// New entries are almost always the newest, so this is usually an append.
	i := sort.Search(len(s.order), func(i int) bool { return entryLess(&e.e, &s.order[i].e) })
	s.order = slices.Insert(s.order, i, e)
}

// removeLocked drops e from the index; it reports false if e was already gone. mu must be held.
func (s *Store) removeLocked(e *entry) bool {
	if e.gone {
		return false
	}
	e.gone = true
	delete(s.byID, e.e.ID)
	k := keyHash{e.e.Context.Key, e.e.Context.ContentHash}
	if s.byKey[k] == e {
		delete(s.byKey, k)
	}
	s.bytes -= e.size()
	s.dead++
	// Compact once half of order is dead, so removals stay O(1) amortised.
	if s.dead > 64 && s.dead > len(s.order)/2 {
		s.order = slices.DeleteFunc(s.order, func(e *entry) bool { return e.gone })
		s.dead = 0
	}
	return true
}

// oldestLocked returns the oldest live entry, or nil. mu must be held.
func (s *Store) oldestLocked() *entry {
	for len(s.order) > 0 && s.order[0].gone {
		s.order[0] = nil
		s.order = s.order[1:]
		s.dead--
	}
	if len(s.order) == 0 {
		return nil
	}
	return s.order[0]
}

// acquire looks up id and takes its io lock, for a call that rewrites or removes the entry.
// The caller must unlock e.io.
func (s *Store) acquire(id string) (*entry, error) {
	s.mu.Lock()
	e := s.byID[id]
	s.mu.Unlock()
	if e == nil {
		return nil, ErrNotFound
	}
	e.io.Lock()
	s.mu.Lock()
	gone := e.gone
	s.mu.Unlock()
	if gone {
		e.io.Unlock()
		return nil, ErrNotFound
	}
	return e, nil
}

// path returns the path of name inside the store folder.
func (s *Store) path(name ...string) string {
	return filepath.Join(append([]string{s.dir}, name...)...)
}

// removeIfExists removes path, treating "already gone" as success.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
