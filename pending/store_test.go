package pending

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSaveDuplicateKeepsOne(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	data := []byte("same bytes")
	first := mustSave(t, s.Store, "assets/a.png", data)

	// Known hash: the body is not even read.
	body := &countingReader{r: bytes.NewReader(data)}
	e, created, err := s.Save(assetContext("assets/a.png", data), "u", nil, body)
	if err != nil || created || e.ID != first.ID || body.n != 0 {
		t.Errorf("Save(dup) = %s, created %v, %v, read %d bytes; want %s, false, nil, 0", e.ID, created, err, body.n, first.ID)
	}
	// Unknown hash: computed, then found to be a duplicate, and the temp file removed.
	e, created, err = s.Save(Context{Key: "assets/a.png"}, "u", nil, bytes.NewReader(data))
	if err != nil || created || e.ID != first.ID {
		t.Errorf("Save(dup, no hash) = %s, created %v, %v", e.ID, created, err)
	}
	// The same key with new bytes is a new entry (a new game version).
	second := mustSave(t, s.Store, "assets/a.png", []byte("new version"))
	if got := ids(s.List()); !slices.Equal(got, sortedIDs(first, second)) {
		t.Errorf("List = %v", got)
	}
	if n := len(listDir(t, s.Dir())); n != 5 { // .lock + 2 pairs
		t.Errorf("folder holds %d names, want 5: %v", n, listDir(t, s.Dir()))
	}
}

func sortedIDs(es ...Entry) []string {
	slices.SortFunc(es, func(a, b Entry) int {
		if entryLess(&a, &b) {
			return -1
		}
		return 1
	})
	return ids(es)
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestConcurrentSaveSameAsset: two captures of one asset at once make one entry.
func TestConcurrentSaveSameAsset(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	data := bytes.Repeat([]byte("z"), 50000)
	var wg sync.WaitGroup
	results := make([]bool, 8)
	for i := range results {
		wg.Go(func() {
			_, created, err := s.Save(assetContext("assets/same.png", data), "u", nil, bytes.NewReader(data))
			if err != nil {
				t.Errorf("Save: %v", err)
			}
			results[i] = created
		})
	}
	wg.Wait()
	if n := len(slices.DeleteFunc(results, func(c bool) bool { return !c })); n != 1 {
		t.Errorf("%d saves created an entry, want 1", n)
	}
	if st := s.Stats(); st.Count != 1 || st.Bytes != int64(len(data)) {
		t.Errorf("Stats = %+v", st)
	}
}

func TestSaveComputesAndChecksContext(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	data := []byte("computed")
	e, created, err := s.Save(Context{Key: "assets/c.json", ContentType: "application/json"}, "u", nil, bytes.NewReader(data))
	if err != nil || !created {
		t.Fatal(created, err)
	}
	want := assetContext("assets/c.json", data)
	if e.Context.ContentHash != want.ContentHash || e.Context.FileSize != int64(len(data)) {
		t.Errorf("context = %+v", e.Context)
	}
	if !s.Has("assets/c.json", want.ContentHash) || s.Has("assets/c.json", strings.Repeat("0", 64)) {
		t.Errorf("Has is wrong")
	}

	bad := assetContext("assets/d.png", []byte("other bytes"))
	if _, _, err := s.Save(bad, "u", nil, bytes.NewReader(data)); !errors.Is(err, ErrMismatch) {
		t.Errorf("Save(wrong hash) = %v, want ErrMismatch", err)
	}
	if _, _, err := s.Save(Context{}, "u", nil, bytes.NewReader(data)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Save(no key) = %v, want ErrInvalid", err)
	}
	// A given context is checked before a byte is written: a hash that is no SHA-256 is invalid.
	if _, _, err := s.Save(Context{Key: "k", ContentHash: "xyz"}, "u", nil, bytes.NewReader(data)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Save(bad hash) = %v, want ErrInvalid", err)
	}
	if _, _, err := s.Save(Context{Key: "k"}, "u", nil, iotestErrReader{}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Save(failing reader) = %v", err)
	}
	if got := s.Stats().Count; got != 1 {
		t.Errorf("Count = %d after failed saves, want 1", got)
	}
	// Nothing is left of the refused saves: no temp file, no draft.
	wantFiles := []string{".lock", e.ID + ".bin", e.ID + ".json"}
	slices.Sort(wantFiles)
	if got := listDir(t, s.Dir()); !slices.Equal(got, wantFiles) {
		t.Errorf("folder = %v, want %v", got, wantFiles)
	}
	// Every failed save is logged, with its key and why.
	lines := s.logs.FilterMessage("Failed to save pending upload").All()
	if len(lines) != 4 || lines[3].ContextMap()["key"] != "k" || !strings.Contains(lines[3].ContextMap()["error"].(string), "boom") ||
		!strings.Contains(lines[0].ContextMap()["error"].(string), "do not match") {
		t.Errorf("failed-save log lines = %v, want one per failed save", lines)
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	for _, n := range listDir(t, dir) {
		if strings.HasPrefix(n, tempPrefix) {
			t.Errorf("temp file left: %s", n)
		}
	}
}

func TestListOldestFirst(t *testing.T) {
	clock := newClock()
	s := mustOpen(t, t.TempDir(), Options{Now: clock.Now})
	var want []Entry
	for i := range 20 {
		if i%3 == 0 {
			clock.Add(time.Second) // several entries share a second: id breaks the tie
		}
		want = append(want, mustSave(t, s.Store, fmt.Sprintf("assets/%d.png", i), []byte{byte(i)}))
	}
	clock.Add(-time.Hour) // the wall clock stepped back
	want = append(want, mustSave(t, s.Store, "assets/back.png", []byte("back")))
	wantIDs := sortedIDs(want...)
	if got := ids(s.List()); !slices.Equal(got, wantIDs) {
		t.Errorf("List =\n%v\nwant\n%v", got, wantIDs)
	}
	if got := s.Stats().Oldest; !got.Equal(clock.Now()) {
		t.Errorf("Oldest = %v, want %v", got, clock.Now())
	}
	s.Close()
	s2 := mustOpen(t, s.Dir(), Options{Now: clock.Now})
	if got := ids(s2.List()); !slices.Equal(got, wantIDs) {
		t.Errorf("List after reopen differs")
	}
}

func TestCapacityEviction(t *testing.T) {
	t.Run("files", func(t *testing.T) {
		clock := newClock()
		s := mustOpen(t, t.TempDir(), Options{MaxFiles: 3, Now: clock.Now})
		var es []Entry
		for i := range 5 {
			clock.Add(time.Second)
			es = append(es, mustSave(t, s.Store, fmt.Sprintf("assets/%d", i), []byte{byte(i)}))
		}
		if got := ids(s.List()); !slices.Equal(got, ids(es[2:])) {
			t.Errorf("List = %v, want the 3 newest", got)
		}
		wantLogs := map[string]string{es[0].ID: ReasonCapacity, es[1].ID: ReasonCapacity}
		if got := discardLogs(s.logs); !mapsEqual(got, wantLogs) {
			t.Errorf("discard logs = %v, want %v", got, wantLogs)
		}
		for _, e := range es[:2] {
			if _, err := os.Stat(filepath.Join(s.Dir(), e.ID+".bin")); !os.IsNotExist(err) {
				t.Errorf("evicted %s still on disk", e.ID)
			}
		}
	})
	t.Run("bytes", func(t *testing.T) {
		clock := newClock()
		s := mustOpen(t, t.TempDir(), Options{MaxBytes: 100, Now: clock.Now})
		a := mustSave(t, s.Store, "assets/a", make([]byte, 40))
		clock.Add(time.Second)
		b := mustSave(t, s.Store, "assets/b", bytes.Repeat([]byte{1}, 40))
		clock.Add(time.Second)
		c := mustSave(t, s.Store, "assets/c", bytes.Repeat([]byte{2}, 30)) // 110 > 100: a goes
		if got := ids(s.List()); !slices.Equal(got, []string{b.ID, c.ID}) {
			t.Errorf("List = %v, want [b c]", got)
		}
		if st := s.Stats(); st.Bytes != 70 || st.Count != 2 {
			t.Errorf("Stats = %+v", st)
		}
		if got := discardLogs(s.logs); !mapsEqual(got, map[string]string{a.ID: ReasonCapacity}) {
			t.Errorf("discard logs = %v", got)
		}
		if _, _, err := s.Save(Context{Key: "assets/huge"}, "u", nil, bytes.NewReader(make([]byte, 101))); !errors.Is(err, ErrFull) {
			t.Errorf("Save(over MaxBytes) = %v, want ErrFull", err)
		}
		assertNoTemp(t, s.Dir())
	})
	t.Run("held entries stay", func(t *testing.T) {
		clock := newClock()
		s := mustOpen(t, t.TempDir(), Options{MaxFiles: 2, Now: clock.Now})
		a := mustSave(t, s.Store, "assets/a", []byte("a"))
		clock.Add(time.Second)
		b := mustSave(t, s.Store, "assets/b", []byte("b"))
		release, ok := s.TryHold(a.ID)
		if !ok {
			t.Fatal("TryHold failed")
		}
		clock.Add(time.Second)
		c := mustSave(t, s.Store, "assets/c", []byte("c")) // a is being uploaded: b goes
		if got := ids(s.List()); !slices.Equal(got, []string{a.ID, c.ID}) {
			t.Errorf("List = %v, want [a c]", got)
		}
		releaseC, _ := s.TryHold(c.ID)
		if _, _, err := s.Save(Context{Key: "assets/d"}, "u", nil, strings.NewReader("d")); !errors.Is(err, ErrFull) {
			t.Errorf("Save with every entry held = %v, want ErrFull", err)
		}
		release()
		releaseC()
		if got := listDir(t, s.Dir()); slices.Contains(got, b.ID+".json") || slices.Contains(got, b.ID+".bin") {
			t.Errorf("evicted entry still on disk: %v", got)
		}
	})
	t.Run("no limit", func(t *testing.T) {
		s := mustOpen(t, t.TempDir(), Options{MaxFiles: 0, MaxBytes: 0})
		for i := range 3 {
			mustSave(t, s.Store, fmt.Sprintf("assets/%d", i), []byte{byte(i)})
		}
		if s.Stats().Count != 3 {
			t.Errorf("Count = %d", s.Stats().Count)
		}
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestDiscard: Discard removes one entry for good, logging why; an entry in use (held by an
// upload, or busy in another call) is left in place with ErrHeld, and an unknown one is
// ErrNotFound. Which entries to discard is the retry service's policy, tested there.
func TestDiscard(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{Now: clock.Now})
	old := mustSave(t, s.Store, "assets/old", []byte("old"))
	tired := mustSave(t, s.Store, "assets/tired", []byte("tired"))
	held := mustSave(t, s.Store, "assets/held", []byte("held"))
	busy := mustSave(t, s.Store, "assets/busy", []byte("busy"))
	clock.Add(time.Minute)
	fresh := mustSave(t, s.Store, "assets/fresh", []byte("fresh"))

	if err := s.Discard(old.ID, ReasonExpired); err != nil {
		t.Fatalf("Discard(old) = %v", err)
	}
	if err := s.Discard(tired.ID, ReasonMaxAttempts); err != nil {
		t.Fatalf("Discard(tired) = %v", err)
	}
	for _, e := range []Entry{old, tired} {
		if _, err := s.Get(e.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%s) after Discard = %v", e.Context.Key, err)
		}
		if s.Has(e.Context.Key, e.Context.ContentHash) {
			t.Errorf("Has(%s) after Discard", e.Context.Key)
		}
		if err := s.Discard(e.ID, ReasonExpired); !errors.Is(err, ErrNotFound) {
			t.Errorf("second Discard(%s) = %v, want ErrNotFound", e.Context.Key, err)
		}
	}
	if err := s.Discard("no-such-id", ReasonExpired); !errors.Is(err, ErrNotFound) {
		t.Errorf("Discard(unknown) = %v, want ErrNotFound", err)
	}
	lines := s.logs.FilterMessage("Discarded pending upload").All()
	if len(lines) != 2 || lines[0].ContextMap()["key"] != "assets/old" || lines[1].ContextMap()["key"] != "assets/tired" {
		t.Errorf("discard log lines = %v", lines)
	}
	if got, want := discardLogs(s.logs), map[string]string{old.ID: ReasonExpired, tired.ID: ReasonMaxAttempts}; !mapsEqual(got, want) {
		t.Errorf("discard logs = %v, want %v", got, want)
	}

	// An entry being uploaded stays until its lease ends.
	release, ok := s.TryHold(held.ID)
	if !ok {
		t.Fatal("TryHold failed")
	}
	if err := s.Discard(held.ID, ReasonExpired); !errors.Is(err, ErrHeld) {
		t.Errorf("Discard(held) = %v, want ErrHeld", err)
	}
	// An entry busy in another call (a rewrite, a removal) is not waited for.
	s.mu.Lock()
	b := s.byID[busy.ID]
	s.mu.Unlock()
	b.io.Lock()
	if err := s.Discard(busy.ID, ReasonExpired); !errors.Is(err, ErrHeld) {
		t.Errorf("Discard(busy) = %v, want ErrHeld", err)
	}
	for _, e := range []Entry{held, busy} {
		if _, err := s.Get(e.ID); err != nil {
			t.Errorf("%s was discarded while in use: %v", e.Context.Key, err)
		}
		if _, err := os.Stat(filepath.Join(dir, e.ID+".bin")); err != nil {
			t.Errorf("%s's files were removed while in use: %v", e.Context.Key, err)
		}
	}
	if n := len(discardLogs(s.logs)); n != 2 {
		t.Errorf("%d discards logged, want 2: a refused discard is not one", n)
	}
	release()
	b.io.Unlock()
	for _, e := range []Entry{held, busy} {
		if err := s.Discard(e.ID, ReasonExpired); err != nil {
			t.Errorf("Discard(%s) once free = %v", e.Context.Key, err)
		}
	}

	if got := ids(s.List()); !slices.Equal(got, []string{fresh.ID}) {
		t.Errorf("List = %v, want only fresh", got)
	}
	if st := s.Stats(); st.Count != 1 || st.Bytes != int64(len("fresh")) {
		t.Errorf("Stats = %+v", st)
	}
	want := []string{".lock", fresh.ID + ".bin", fresh.ID + ".json"}
	slices.Sort(want)
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Errorf("folder = %v, want %v", got, want)
	}
	s.Close()
	if s2 := mustOpen(t, dir, Options{}); !slices.Equal(ids(s2.List()), []string{fresh.ID}) {
		t.Errorf("after reopen List = %v: a discarded entry came back", ids(s2.List()))
	}
}

func TestTryHoldExclusive(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	e := mustSave(t, s.Store, "assets/a", []byte("a"))
	if _, ok := s.TryHold("no-such-id"); ok {
		t.Error("TryHold(unknown) = ok")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	winners := 0
	releases := make(chan func(), 16)
	for range 16 {
		wg.Go(func() {
			if release, ok := s.TryHold(e.ID); ok {
				mu.Lock()
				winners++
				mu.Unlock()
				releases <- release
			}
		})
	}
	wg.Wait()
	if winners != 1 {
		t.Fatalf("%d holders at once, want 1", winners)
	}
	release := <-releases
	release()
	release() // a second call does nothing, and must not free someone else's lease
	r2, ok := s.TryHold(e.ID)
	if !ok {
		t.Fatal("TryHold after release failed")
	}
	release()
	if _, ok := s.TryHold(e.ID); ok {
		t.Error("an old release freed the new lease")
	}
	r2()
}

func TestLockAndReadOnly(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	e := mustSave(t, s.Store, "assets/a", []byte("a"))

	start := time.Now()
	_, err := Open(Options{Dir: dir})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) ||
		!strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("second Open = %v, want ErrLocked naming %s and the holder's pid", err, dir)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %v: it should fail at once", d)
	}
	// Deleting .lock admits no second owner: the lock is not the file's existence.
	if err := os.Remove(filepath.Join(dir, lockName)); err != nil && runtime.GOOS != "windows" {
		t.Fatal(err)
	}
	if s2, err := Open(Options{Dir: dir}); !errors.Is(err, ErrLocked) {
		if err == nil {
			s2.Close()
		}
		t.Errorf("Open after deleting .lock = %v, want ErrLocked", err)
	}

	// Plant things a writable open would clean up; read-only must leave them all.
	if err := os.WriteFile(filepath.Join(dir, tempPrefix+"x.bin"), []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := "11111111-1111-4111-8111-111111111111"
	if err := os.WriteFile(filepath.Join(dir, bad+".json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshotDir(t, dir)
	ro := mustOpen(t, dir, Options{ReadOnly: true})
	if got := ids(ro.List()); !slices.Equal(got, []string{e.ID}) {
		t.Errorf("read-only List = %v", got)
	}
	if got := readEntry(t, ro.Store, e.ID); string(got) != "a" {
		t.Errorf("read-only Open = %q", got)
	}
	if _, _, err := ro.Save(Context{Key: "k"}, "u", nil, strings.NewReader("x")); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only Save = %v", err)
	}
	for name, err := range map[string]error{
		"Delete":        ro.Delete(e.ID),
		"Reject":        ro.Reject(e.ID, "x"),
		"RecordAttempt": second(ro.RecordAttempt(e.ID, time.Now(), "x", time.Time{})),
		"Purge":         second(ro.Purge(nil)),
		"Discard":       ro.Discard(e.ID, ReasonExpired),
		"NewDraft":      second(ro.NewDraft()),
		"Sync":          second(ro.Sync()),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("read-only %s = %v, want ErrReadOnly", name, err)
		}
	}
	if _, err := ro.Get(e.ID); err != nil {
		t.Errorf("read-only store lost %s: %v", e.ID, err)
	}
	if ro.logs.FilterMessage("Skipped unreadable pending upload").Len() != 1 {
		t.Errorf("read-only open did not log the unreadable entry")
	}
	ro.Close()
	if after := snapshotDir(t, dir); !slices.Equal(before, after) {
		t.Errorf("read-only open changed the folder:\nbefore %v\nafter  %v", before, after)
	}

	// A read-only open of a folder that does not exist is an empty store, and creates nothing.
	missing := filepath.Join(t.TempDir(), "none")
	ro2 := mustOpen(t, missing, Options{ReadOnly: true})
	if ro2.Stats().Count != 0 {
		t.Error("missing folder is not empty")
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("read-only open created the folder")
	}

	// Once the owner closes, another open succeeds.
	s.Close()
	s3 := mustOpen(t, dir, Options{})
	if s3.Stats().Count != 1 {
		t.Errorf("Count = %d", s3.Stats().Count)
	}
}

func second[T any](_ T, err error) error { return err }

// snapshotDir lists every file under dir with its size and modification time.
func snapshotDir(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %d %d %v", p, fi.Size(), fi.ModTime().UnixNano(), fi.Mode()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestClosed(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	e := mustSave(t, s.Store, "assets/a", []byte("a"))
	r, err := s.Open(e.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, _, err := s.Save(Context{Key: "k"}, "u", nil, strings.NewReader("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Save after Close = %v", err)
	}
	if err := s.Delete(e.ID); !errors.Is(err, ErrClosed) {
		t.Errorf("Delete after Close = %v", err)
	}
	if b, err := io.ReadAll(r); err != nil || string(b) != "a" {
		t.Errorf("reader after Close = %q, %v", b, err)
	}
}

func TestDeleteAndReject(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	a := mustSave(t, s.Store, "assets/a", []byte("a"))
	b := mustSave(t, s.Store, "assets/b", []byte("b"))
	if err := s.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v", err)
	}
	if s.Has("assets/a", a.Context.ContentHash) {
		t.Error("Has after Delete")
	}
	reason := "400 Bad Request: " + strings.Repeat("x", 5000)
	if err := s.Reject(b.ID, reason); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(rejected) = %v", err)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{".lock", "rejected"}) {
		t.Errorf("folder = %v", got)
	}
	if got := listDir(t, filepath.Join(dir, rejectedDir)); !slices.Equal(got, []string{b.ID + ".bin", b.ID + ".json"}) {
		t.Errorf("rejected/ = %v", got)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, rejectedDir, b.ID+".json"))
	d, err := decodeMeta(b.ID, raw)
	if err != nil || d.meta.LastError != reason[:maxErrorBytes] {
		t.Errorf("rejected meta: %v, last_error of %d bytes", err, len(d.meta.LastError))
	}
	if got := s.logs.FilterMessage("Rejected pending upload").Len(); got != 1 {
		t.Errorf("%d reject log lines", got)
	}
	for _, op := range []error{
		s.Reject("nope", "x"),
		second(s.RecordAttempt("nope", time.Now(), "", time.Time{})),
		second(s.Open("nope")),
		second(s.Get("nope")),
	} {
		if !errors.Is(op, ErrNotFound) {
			t.Errorf("op on unknown id = %v, want ErrNotFound", op)
		}
	}
}

// TestPurge: Purge removes every entry to upload, whatever its age or attempts, reporting its
// progress; an entry being uploaded stays.
func TestPurge(t *testing.T) {
	clock := newClock()
	s := mustOpen(t, t.TempDir(), Options{Now: clock.Now})
	var all []Entry
	for i := range 10 {
		clock.Add(time.Second)
		all = append(all, mustSave(t, s.Store, fmt.Sprintf("assets/%d", i), []byte{byte(i)}))
	}
	if _, err := s.RecordAttempt(all[3].ID, clock.Now(), "503", time.Time{}); err != nil {
		t.Fatal(err)
	}
	held := all[5]
	release, _ := s.TryHold(held.ID)
	var calls [][2]int
	n, err := s.Purge(func(done, total int) { calls = append(calls, [2]int{done, total}) })
	if err != nil || n != 9 {
		t.Fatalf("Purge = %d, %v; want 9 (every entry but the held one)", n, err)
	}
	if len(calls) != 10 {
		t.Fatalf("progress calls = %v", calls)
	}
	for i, c := range calls {
		if c != [2]int{i, 9} {
			t.Errorf("progress call %d = %v, want [%d 9]", i, c, i)
		}
	}
	if got := ids(s.List()); !slices.Equal(got, []string{held.ID}) {
		t.Errorf("List = %v, want only the held entry", got)
	}
	if lines := s.logs.FilterMessage("Purged pending uploads").All(); len(lines) != 1 || lines[0].ContextMap()["removed"] != int64(9) {
		t.Errorf("purge log = %v", lines)
	}
	release()
	if n, err := s.Purge(nil); err != nil || n != 1 || s.Stats().Count != 0 || s.Stats().Bytes != 0 {
		t.Errorf("Purge after release = %d, %v; stats %+v", n, err, s.Stats())
	}
	if got := listDir(t, s.Dir()); !slices.Equal(got, []string{".lock"}) {
		t.Errorf("folder = %v", got)
	}
	if n, err := s.Purge(nil); err != nil || n != 0 {
		t.Errorf("Purge of an empty store = %d, %v", n, err)
	}
}

func TestFileModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix modes")
	}
	dir := filepath.Join(t.TempDir(), "pending_uploads")
	s := mustOpen(t, dir, Options{})
	a := mustSave(t, s.Store, "assets/a", []byte("a"))
	b := mustSave(t, s.Store, "assets/b", []byte("b"))
	if _, err := s.RecordAttempt(a.ID, time.Now(), "x", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reject(b.ID, "no"); err != nil {
		t.Fatal(err)
	}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRemovalRacesAttempt runs the bookkeeping calls of one entry against each other; under -race
// this checks the locking, and afterwards the folder must match the index.
func TestRemovalRacesAttempt(t *testing.T) {
	clock := newClock()
	s := mustOpen(t, t.TempDir(), Options{MaxFiles: 20, Now: clock.Now})
	for round := range 20 {
		e := mustSave(t, s.Store, fmt.Sprintf("assets/r%d", round), []byte{byte(round)})
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = s.RecordAttempt(e.ID, clock.Now(), "x", time.Time{}) })
		wg.Go(func() { _ = s.Delete(e.ID) })
		wg.Go(func() { _ = s.Reject(e.ID, "no") })
		wg.Go(func() { _ = s.Discard(e.ID, ReasonExpired) })
		wg.Go(func() { _, _ = s.Purge(nil) })
		wg.Go(func() { _ = s.List(); _ = s.Stats() })
		wg.Wait()
	}
	onDisk := 0
	for _, n := range listDir(t, s.Dir()) {
		if strings.HasSuffix(n, ".json") {
			onDisk++
		}
	}
	if onDisk != s.Stats().Count {
		t.Errorf("%d .json files, index has %d", onDisk, s.Stats().Count)
	}
	assertNoTemp(t, s.Dir())
}

// TestSetLimits: new limits apply from the next commit, 0 lifts a cap, and changing them while
// saves run is safe (under -race).
func TestSetLimits(t *testing.T) {
	clock := newClock()
	s := mustOpen(t, t.TempDir(), Options{Now: clock.Now})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 20 {
			s.SetLimits(100+i, int64(1000+i)) // never binding
		}
	})
	for i := range 10 {
		mustSave(t, s.Store, fmt.Sprintf("assets/%d", i), []byte{byte(i)})
	}
	wg.Wait()
	if got := s.Stats().Count; got != 10 {
		t.Fatalf("Count = %d, want 10", got)
	}

	s.SetLimits(4, 0)
	clock.Add(time.Second)
	newest := mustSave(t, s.Store, "assets/new", []byte("new"))
	if st := s.Stats(); st.Count != 4 {
		t.Errorf("Count = %d after lowering MaxFiles to 4", st.Count)
	}
	if _, err := s.Get(newest.ID); err != nil {
		t.Errorf("the newest entry was evicted: %v", err)
	}
	if n := len(discardLogs(s.logs)); n != 7 {
		t.Errorf("%d evictions logged, want 7", n)
	}

	s.SetLimits(0, 0) // no cap at all
	clock.Add(time.Second)
	for i := range 10 {
		mustSave(t, s.Store, fmt.Sprintf("assets/more/%d", i), []byte{byte(i)})
	}
	if got := s.Stats().Count; got != 14 {
		t.Errorf("Count = %d with no caps, want 14", got)
	}

	s.SetLimits(0, 5) // a byte cap alone
	clock.Add(time.Second)
	mustSave(t, s.Store, "assets/two", []byte("22"))
	if st := s.Stats(); st.Bytes != 5 || st.Count != 4 {
		t.Errorf("Stats = %+v under a 5-byte cap, want 4 entries of 5 bytes", st)
	}
}
