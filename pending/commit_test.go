package pending

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingDisk is the real file system, recording every fsync through the store's seam: the
// base names of the files SyncFile flushed and "<dir>" for each SyncDir, in order. dirErr and
// fileErr, when set, make SyncDir and SyncFile fail instead.
type countingDisk struct {
	mu      sync.Mutex
	events  []string
	dirErr  error
	fileErr error
}

func (d *countingDisk) Wrap(f *os.File) tempFile { return f }

func (d *countingDisk) SyncDir(dir string) error {
	d.mu.Lock()
	d.events = append(d.events, "<dir>")
	err := d.dirErr
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return syncDir(dir)
}

func (d *countingDisk) SyncFile(path string) error {
	d.mu.Lock()
	d.events = append(d.events, filepath.Base(path))
	err := d.fileErr
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return osFS{}.SyncFile(path)
}

// take returns the fsyncs recorded since the last take.
func (d *countingDisk) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.events
	d.events = nil
	return out
}

func (d *countingDisk) fail(dirErr, fileErr error) {
	d.mu.Lock()
	d.dirErr, d.fileErr = dirErr, fileErr
	d.mu.Unlock()
}

// newDraft writes data as a draft of key, in two writes, with a complete context, a target and
// headers (a secret one among them), as the committer fills one in.
func newDraft(tb testing.TB, s *Store, key string, data []byte) *Draft {
	tb.Helper()
	d, err := s.NewDraft()
	if err != nil {
		tb.Fatalf("NewDraft: %v", err)
	}
	half := len(data) / 2
	for _, part := range [][]byte{data[:half], data[half:]} {
		if _, err := d.Write(part); err != nil {
			tb.Fatalf("write draft: %v", err)
		}
	}
	d.Context = assetContext(key, data)
	d.TargetURL = "https://fusou.dev/api/asset-sync/upload"
	d.Headers = map[string]string{"Origin": "https://fusou.dev", "Cookie": "session=secret"}
	return d
}

// draftPath is where a draft's bytes are being written.
func draftPath(d *Draft) string { return d.w.Name() }

func assertGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there (%v)", filepath.Base(path), err)
	}
}

// TestCommitBatch commits one batch holding new assets, a second capture of one of them, a
// capture of an asset already pending, a draft of the wrong size and one with an invalid
// context: the new assets become entries in the current format, every other draft is dropped
// with nothing left behind, and Sync lists the new entries for upload.
func TestCommitBatch(t *testing.T) {
	clock := newClock()
	dir := filepath.Join(t.TempDir(), "pending_uploads")
	s := mustOpen(t, dir, Options{Now: clock.Now})
	existing := mustSave(t, s.Store, "assets/old.png", []byte("old bytes"))
	clock.Add(time.Second)

	bodies := [][]byte{[]byte("first asset"), []byte("second asset"), bytes.Repeat([]byte("third "), 5000)}
	var drafts []*Draft
	for i, data := range bodies {
		drafts = append(drafts, newDraft(t, s.Store, fmt.Sprintf("assets/new%d.png", i), data))
	}
	// A draft is a 0600 <id>.bin in the store folder, and no entry yet.
	for i, d := range drafts {
		fi, err := os.Lstat(draftPath(d))
		if err != nil || filepath.Dir(draftPath(d)) != s.Dir() || !strings.HasSuffix(fi.Name(), ".bin") ||
			!validID(strings.TrimSuffix(fi.Name(), ".bin")) {
			t.Fatalf("draft %d is %s (%v), want a <uuid>.bin in the store folder", i, draftPath(d), err)
		}
		if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
			t.Errorf("draft mode %v, want 0600", fi.Mode().Perm())
		}
		if d.Size() != int64(len(bodies[i])) {
			t.Errorf("draft %d Size = %d, want %d", i, d.Size(), len(bodies[i]))
		}
		if s.Has(d.Context.Key, d.Context.ContentHash) {
			t.Errorf("draft %d is an entry before its commit", i)
		}
	}

	twin := newDraft(t, s.Store, "assets/new0.png", bodies[0])            // a second capture in the batch
	again := newDraft(t, s.Store, "assets/old.png", []byte("old bytes"))  // already pending
	wrongSize := newDraft(t, s.Store, "assets/size.png", []byte("12345")) // context says 6 bytes
	wrongSize.Context.FileSize = 6
	badHash := newDraft(t, s.Store, "assets/hash.png", []byte("hash")) // not a SHA-256
	badHash.Context.ContentHash = "xyz"
	noKey := newDraft(t, s.Store, "assets/nokey.png", []byte("no key"))
	noKey.Context.Key = ""
	dropped := []*Draft{twin, again, wrongSize, badHash, noKey}
	batch := append(slices.Clone(drafts), dropped...)

	res := s.Commit(batch)
	if len(res) != len(batch) {
		t.Fatalf("Commit returned %d results for %d drafts", len(res), len(batch))
	}
	for i, d := range drafts {
		r := res[i]
		if r.Err != nil || !r.Created {
			t.Fatalf("draft %d: created %v, %v", i, r.Created, r.Err)
		}
		e := r.Entry
		want := Meta{ID: e.ID, TargetURL: d.TargetURL, CreatedAt: clock.Now().Unix(),
			Headers:  map[string]string{"Origin": "https://fusou.dev", "content-hash": d.Context.ContentHash},
			FilePath: filepath.Join(s.Dir(), e.ID+".bin"), Context: e.Meta.Context}
		if !validID(e.ID) || e.Context != d.Context || !entryEqual(Entry{Meta: e.Meta, Context: e.Context}, Entry{Meta: want, Context: d.Context}) {
			t.Errorf("draft %d became\n%+v\nwant\n%+v", i, e, want)
		}
		if filepath.Base(draftPath(d)) != e.ID+".bin" {
			t.Errorf("draft %d: entry %s does not keep the draft's file %s", i, e.ID, filepath.Base(draftPath(d)))
		}
	}
	dropRes := res[len(drafts):] // in the order of dropped
	if r := dropRes[0]; r.Err != nil || r.Created || r.Entry.ID != res[0].Entry.ID {
		t.Errorf("second capture in the batch = %s, created %v, %v; want %s, false", r.Entry.ID, r.Created, r.Err, res[0].Entry.ID)
	}
	if r := dropRes[1]; r.Err != nil || r.Created || r.Entry.ID != existing.ID {
		t.Errorf("capture of a pending asset = %s, created %v, %v; want %s, false", r.Entry.ID, r.Created, r.Err, existing.ID)
	}
	if r := dropRes[2]; !errors.Is(r.Err, ErrMismatch) || r.Created {
		t.Errorf("draft of the wrong size = created %v, %v; want ErrMismatch", r.Created, r.Err)
	}
	for _, r := range dropRes[3:] {
		if !errors.Is(r.Err, ErrInvalid) || r.Created {
			t.Errorf("draft with an invalid context = created %v, %v; want ErrInvalid", r.Created, r.Err)
		}
	}
	for _, d := range dropped {
		assertGone(t, draftPath(d))
	}
	if n := s.logs.FilterMessage("Failed to save pending upload").Len(); n != 3 {
		t.Errorf("%d failed-save log lines, want 3 (the duplicates are no failure)", n)
	}

	// Committed, not yet synced: known (a later capture is a duplicate) but not listed for upload.
	created := []string{res[0].Entry.ID, res[1].Entry.ID, res[2].Entry.ID}
	if got := ids(s.List()); !slices.Equal(got, []string{existing.ID}) {
		t.Errorf("List before Sync = %v, want only the synced entry", got)
	}
	if got := s.Unsynced(); got != 3 {
		t.Errorf("Unsynced = %d, want 3", got)
	}
	for i, id := range created {
		if _, err := s.Get(id); err != nil || !s.Has(drafts[i].Context.Key, drafts[i].Context.ContentHash) {
			t.Errorf("committed %s: Get %v, Has false", id, err)
		}
	}
	if st := s.Stats(); st.Count != 4 {
		t.Errorf("Stats = %+v, want 4 entries", st)
	}

	synced, err := s.Sync()
	if err != nil || !slices.Equal(ids(synced), created) {
		t.Fatalf("Sync = %v, %v; want %v", ids(synced), err, created)
	}
	if got, want := ids(s.List()), append([]string{existing.ID}, sortedIDs(res[0].Entry, res[1].Entry, res[2].Entry)...); !slices.Equal(got, want) {
		t.Errorf("List after Sync = %v, want %v", got, want)
	}
	if again, err := s.Sync(); err != nil || len(again) != 0 || s.Unsynced() != 0 {
		t.Errorf("second Sync = %v, %v; Unsynced %d", ids(again), err, s.Unsynced())
	}

	// On disk: the lock and one pair per entry, nothing else; each .json in FUSOU's format.
	want := []string{".lock", existing.ID + ".bin", existing.ID + ".json"}
	for _, id := range created {
		want = append(want, id+".bin", id+".json")
	}
	slices.Sort(want)
	if got := listDir(t, s.Dir()); !slices.Equal(got, want) {
		t.Errorf("folder =\n%v\nwant\n%v", got, want)
	}
	for i, id := range created {
		if got := readEntry(t, s.Store, id); !bytes.Equal(got, bodies[i]) {
			t.Errorf("%s: bytes differ", id)
		}
		raw := mustRead(t, s.Dir(), id+".json")
		fm := mustDecodeFUSOU(t, raw)
		if fm.ID != id || fm.FilePath != filepath.Join(s.Dir(), id+".bin") ||
			!maps.Equal(fm.Headers, map[string]string{"Origin": "https://fusou.dev", "content-hash": drafts[i].Context.ContentHash}) {
			t.Errorf("%s.json as FUSOU reads it: %+v", id, fm)
		}
		if d, err := decodeMeta(id, raw); err != nil || !d.ours || !d.tagged || d.ctx != drafts[i].Context {
			t.Errorf("%s.json: %v, ours %v, tagged %v, context %+v", id, err, d.ours, d.tagged, d.ctx)
		}
		if runtime.GOOS != "windows" {
			for _, name := range []string{id + ".bin", id + ".json"} {
				if fi, err := os.Stat(filepath.Join(s.Dir(), name)); err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: %v, want mode 0600", name, err)
				}
			}
		}
	}

	// Reopened, the store holds the same entries and rewrites nothing.
	before := s.List()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpen(t, dir, Options{Now: clock.Now})
	after := s2.List()
	if len(after) != len(before) {
		t.Fatalf("after reopen %d entries, want %d", len(after), len(before))
	}
	for i := range before {
		if !entryEqual(after[i], before[i]) {
			t.Errorf("after reopen\n%+v\nwant\n%+v", after[i], before[i])
		}
	}
	if s2.logs.FilterMessage("Rewrote pending metadata in the current format").Len() != 0 ||
		s2.logs.FilterMessage("Removed stray pending file").Len() != 0 {
		t.Errorf("reopen found something to fix: %v", s2.logs.All())
	}
}

// TestCommitOneFolderFsync: Commit fsyncs nothing; Sync fsyncs every .bin and .json of the
// batch, then the folder once, whatever the batch's size. A Save costs one folder fsync too.
func TestCommitOneFolderFsync(t *testing.T) {
	for _, n := range []int{1, 5, 40} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			disk := &countingDisk{}
			s := mustOpen(t, t.TempDir(), Options{fs: disk})
			var batch []*Draft
			for i := range n {
				batch = append(batch, newDraft(t, s.Store, fmt.Sprintf("assets/%d.png", i), []byte(fmt.Sprint("body ", i))))
			}
			batch = append(batch, newDraft(t, s.Store, "assets/0.png", []byte("body 0"))) // a duplicate costs nothing
			disk.take()

			res := s.Commit(batch)
			var want []string
			for _, r := range res[:n] {
				if r.Err != nil || !r.Created {
					t.Fatalf("Commit: created %v, %v", r.Created, r.Err)
				}
				want = append(want, r.Entry.ID+".bin", r.Entry.ID+".json")
			}
			if got := disk.take(); len(got) != 0 {
				t.Errorf("Commit fsynced %v, want nothing (Sync does)", got)
			}

			if synced, err := s.Sync(); err != nil || len(synced) != n {
				t.Fatalf("Sync = %d entries, %v", len(synced), err)
			}
			got := disk.take()
			if len(got) == 0 || got[len(got)-1] != "<dir>" || slices.Index(got, "<dir>") != len(got)-1 {
				t.Fatalf("Sync's fsyncs = %v, want the files, then the folder once", got)
			}
			files := slices.Sorted(slices.Values(got[:len(got)-1]))
			slices.Sort(want)
			if !slices.Equal(files, want) {
				t.Errorf("Sync flushed %v, want %v", files, want)
			}

			if synced, err := s.Sync(); err != nil || len(synced) != 0 {
				t.Errorf("Sync of nothing = %d entries, %v", len(synced), err)
			}
			if got := disk.take(); len(got) != 0 {
				t.Errorf("Sync of nothing fsynced %v", got)
			}
			mustSave(t, s.Store, "assets/saved.png", []byte("saved"))
			if got := disk.take(); len(got) != 3 || got[2] != "<dir>" {
				t.Errorf("Save's fsyncs = %v, want its two files and the folder", got)
			}
		})
	}
}

// barrierDisk holds every SyncFile until want of them are under way at once, so that a Sync
// flushing its files one after another fails (after a deadline) instead of passing.
type barrierDisk struct {
	mu      sync.Mutex
	arrived int
	want    int
	all     chan struct{}
}

func (d *barrierDisk) Wrap(f *os.File) tempFile { return f }

func (d *barrierDisk) SyncDir(dir string) error { return syncDir(dir) }

func (d *barrierDisk) SyncFile(path string) error {
	d.mu.Lock()
	d.arrived++
	if d.arrived == d.want {
		close(d.all)
	}
	d.mu.Unlock()
	select {
	case <-d.all:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s: flushed alone: the others never started", filepath.Base(path))
	}
	return osFS{}.SyncFile(path)
}

// TestSyncFlushesInParallel: the files of a batch are fsync'd at once, not one by one.
func TestSyncFlushesInParallel(t *testing.T) {
	const n = 4
	disk := &barrierDisk{want: min(2*n, maxParallelSyncs), all: make(chan struct{})}
	s := mustOpen(t, t.TempDir(), Options{fs: disk})
	var batch []*Draft
	for i := range n {
		batch = append(batch, newDraft(t, s.Store, fmt.Sprintf("assets/%d.png", i), []byte{byte(i)}))
	}
	for _, r := range s.Commit(batch) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if synced, err := s.Sync(); err != nil || len(synced) != n {
		t.Errorf("Sync = %d entries, %v; want %d flushed together", len(synced), err, n)
	}
}

// TestSyncFails: when the folder's or a file's fsync fails, Sync returns the error and lists
// none of the batch for upload (the entries may not survive a power cut); they stay committed,
// and the next Sync that succeeds lists them.
func TestSyncFails(t *testing.T) {
	eio := errors.New("input/output error")
	for _, tc := range []struct {
		name            string
		dirErr, fileErr error
	}{
		{"folder", eio, nil},
		{"file", nil, eio},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := &countingDisk{}
			s := mustOpen(t, t.TempDir(), Options{fs: disk})
			kept := mustSave(t, s.Store, "assets/kept.png", []byte("kept"))
			var batch []*Draft
			for i := range 3 {
				batch = append(batch, newDraft(t, s.Store, fmt.Sprintf("assets/%d.png", i), []byte{byte(i)}))
			}
			var created []Entry
			for _, r := range s.Commit(batch) {
				if r.Err != nil || !r.Created {
					t.Fatalf("Commit: %v, %v", r.Created, r.Err)
				}
				created = append(created, r.Entry)
			}

			disk.fail(tc.dirErr, tc.fileErr)
			synced, err := s.Sync()
			if !errors.Is(err, eio) || len(synced) != 0 {
				t.Fatalf("Sync with a failing fsync = %v, %v; want the error", ids(synced), err)
			}
			if got := ids(s.List()); !slices.Equal(got, []string{kept.ID}) {
				t.Errorf("List after the failed Sync = %v, want none of the batch", got)
			}
			if got := s.Unsynced(); got != 3 {
				t.Errorf("Unsynced after the failed Sync = %d, want 3", got)
			}
			if _, err := s.Sync(); !errors.Is(err, eio) {
				t.Errorf("second failing Sync = %v", err)
			}

			disk.fail(nil, nil)
			synced, err = s.Sync()
			if err != nil || !slices.Equal(ids(synced), ids(created)) {
				t.Fatalf("Sync once the disk works = %v, %v; want %v", ids(synced), err, ids(created))
			}
			if got := ids(s.List()); !slices.Equal(got, sortedIDs(append([]Entry{kept}, created...)...)) {
				t.Errorf("List = %v", got)
			}
			if s.Unsynced() != 0 {
				t.Errorf("Unsynced = %d", s.Unsynced())
			}
		})
	}
}

// TestSyncSkipsRemoved: an entry removed between its Commit and the Sync (deleted, discarded,
// evicted) is not flushed nor listed, and does not fail the Sync.
func TestSyncSkipsRemoved(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	var batch []*Draft
	for i := range 3 {
		batch = append(batch, newDraft(t, s.Store, fmt.Sprintf("assets/%d.png", i), []byte{byte(i)}))
	}
	res := s.Commit(batch)
	if err := s.Delete(res[0].Entry.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Discard(res[1].Entry.ID, ReasonExpired); err != nil {
		t.Fatal(err)
	}
	synced, err := s.Sync()
	if err != nil || !slices.Equal(ids(synced), []string{res[2].Entry.ID}) {
		t.Errorf("Sync = %v, %v; want only %s", ids(synced), err, res[2].Entry.ID)
	}
	if got := ids(s.List()); !slices.Equal(got, []string{res[2].Entry.ID}) {
		t.Errorf("List = %v", got)
	}
}

// TestCommitTrustsTheHash: Commit takes the caller's hash without reading the bytes; a wrong
// one is caught when the entry is opened for upload, and the entry moved to corrupt/.
func TestCommitTrustsTheHash(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	d := newDraft(t, s.Store, "assets/a.png", []byte("actual"))
	d.Context = assetContext("assets/a.png", []byte("claims")) // same size, other bytes
	r := s.Commit([]*Draft{d})[0]
	if r.Err != nil || !r.Created {
		t.Fatalf("Commit = %v, %v", r.Created, r.Err)
	}
	if _, err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(r.Entry.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
	if got := listDir(t, filepath.Join(s.Dir(), corruptDir)); !slices.Equal(got, []string{r.Entry.ID + ".bin", r.Entry.ID + ".json"}) {
		t.Errorf("corrupt/ = %v", got)
	}
	assertDiscardLogged(t, s, "sha256")
}

// TestCommitLimits: a commit evicts the oldest entries to stay under MaxFiles, and refuses a
// draft over MaxBytes with ErrFull, leaving nothing of it.
func TestCommitLimits(t *testing.T) {
	clock := newClock()
	s := mustOpen(t, t.TempDir(), Options{MaxFiles: 2, MaxBytes: 10, Now: clock.Now})
	a := mustSave(t, s.Store, "assets/a", []byte("a"))
	clock.Add(time.Second)
	b := mustSave(t, s.Store, "assets/b", []byte("b"))
	clock.Add(time.Second)
	huge := newDraft(t, s.Store, "assets/huge", bytes.Repeat([]byte("h"), 11))
	c := newDraft(t, s.Store, "assets/c", []byte("c"))
	res := s.Commit([]*Draft{huge, c})
	if !errors.Is(res[0].Err, ErrFull) || res[0].Created {
		t.Errorf("draft over MaxBytes = %v, %v; want ErrFull", res[0].Created, res[0].Err)
	}
	assertGone(t, draftPath(huge))
	if res[1].Err != nil || !res[1].Created {
		t.Fatalf("Commit = %v, %v", res[1].Created, res[1].Err)
	}
	if _, err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := ids(s.List()); !slices.Equal(got, []string{b.ID, res[1].Entry.ID}) {
		t.Errorf("List = %v, want b and c", got)
	}
	if got := discardLogs(s.logs); !mapsEqual(got, map[string]string{a.ID: ReasonCapacity}) {
		t.Errorf("discard logs = %v, want a evicted for capacity", got)
	}
}

// TestDraftDiscardAndReader: a draft reads back what was written so far; Discard leaves nothing.
func TestDraftDiscardAndReader(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	before := listDir(t, s.Dir())
	d := newDraft(t, s.Store, "assets/a.png", []byte("draft bytes"))
	r, err := d.Reader()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(got) != "draft bytes" {
		t.Errorf("Reader = %q, %v", got, err)
	}
	d.Discard()
	d.Discard() // a second Discard does nothing
	assertGone(t, draftPath(d))
	if after := listDir(t, s.Dir()); !slices.Equal(after, before) {
		t.Errorf("folder after Discard = %v, want %v", after, before)
	}
	if s.Has(d.Context.Key, d.Context.ContentHash) || s.Stats().Count != 0 {
		t.Errorf("a discarded draft became an entry")
	}
}

// TestCommitClosed: once the store is closed, NewDraft, Commit and Sync fail with ErrClosed,
// and Commit still removes the drafts it was given.
func TestCommitClosed(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	d := newDraft(t, s.Store, "assets/a.png", []byte("late"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewDraft(); !errors.Is(err, ErrClosed) {
		t.Errorf("NewDraft after Close = %v", err)
	}
	if r := s.Commit([]*Draft{d})[0]; !errors.Is(r.Err, ErrClosed) || r.Created {
		t.Errorf("Commit after Close = %v, %v", r.Created, r.Err)
	}
	assertGone(t, draftPath(d))
	if _, err := s.Sync(); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close = %v", err)
	}
}
