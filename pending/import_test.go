package pending

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/internal/private/privatetest"
)

// source is a folder of entries to import, as the FUSOU app writes them.
type source struct {
	t   *testing.T
	dir string
	// sound maps the id of each sound asset entry to its key, hash and bytes.
	sound map[string]sourceEntry
}

type sourceEntry struct {
	key, hash string
	data      []byte
}

func newSource(t *testing.T) *source {
	return &source{t: t, dir: t.TempDir(), sound: map[string]sourceEntry{}}
}

// add writes entry i in FUSOU's format with a context made by context (given the bytes) and
// returns its id; sound entries are remembered.
func (src *source) add(i int, data []byte, headers map[string]string, context *string, sound bool) string {
	src.t.Helper()
	id := fmt.Sprintf("%08x-0000-4000-8000-%012d", i, i)
	m := fmt.Sprintf(`{
  "id": %q,
  "target_url": "https://fusou.dev/api/asset-sync/upload",
  "headers": %s,
  "created_at": 1764633600,
  "attempt_count": 7,
  "last_attempt_at": 1764640000,
  "file_path": %q,
  "context": %s
}`, id, mustJSON(src.t, headers), `C:\Users\u\AppData\Roaming\fusou-app\pending_uploads\`+id+".bin", mustJSON(src.t, context))
	mustWrite(src.t, src.dir, id+".json", []byte(m))
	mustWrite(src.t, src.dir, id+".bin", data)
	if sound {
		src.sound[id] = sourceEntry{key: assetKey(i), hash: sha256Hex(data), data: data}
	}
	return id
}

// addAsset writes a sound asset entry i with the hash in its headers, as the app does.
func (src *source) addAsset(i int, data []byte) string {
	return src.add(i, data, map[string]string{"content-hash": sha256Hex(data)}, assetJSON(i, len(data)), true)
}

func assetKey(i int) string { return fmt.Sprintf("assets/kcs2/img/import/%d.png", i) }

func assetJSON(i, size int) *string {
	s := fmt.Sprintf(`{"Asset":{"relative_path":%q,"key":%q,"file_size":%d,"dataset_id":null,"content_type":"image/png"}}`,
		strings.TrimPrefix(assetKey(i), "assets/"), assetKey(i), size)
	return &s
}

// age sets every file's modification time to d before now, so that the folder looks quiet.
func (src *source) age(now time.Time, d time.Duration) {
	src.t.Helper()
	ents, err := os.ReadDir(src.dir)
	if err != nil {
		src.t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Chtimes(filepath.Join(src.dir, e.Name()), now.Add(-d), now.Add(-d)); err != nil {
			src.t.Fatal(err)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestImportLargeFolder imports a folder of 10,000 entries, some broken, twice: the first run
// copies every sound entry and counts the rest, the second imports nothing new, and the source
// stays as it was. With -short, and under wine, it takes 1,000 entries (one of each broken kind):
// wine's file operations cost milliseconds each (every one a round trip to wineserver), so
// 10,000 outlast the test's time there.
func TestImportLargeFolder(t *testing.T) {
	n := 10000
	if testing.Short() || privatetest.UnderWine() {
		n = 1000
	}
	src := newSource(t)
	var uploaded []string // keys the index knows
	for i := range n {
		data := []byte(fmt.Sprintf("asset %d bytes", i))
		switch {
		case i%1000 == 1: // malformed .json
			id := src.addAsset(i, data)
			delete(src.sound, id)
			mustWrite(t, src.dir, id+".json", []byte(`{"id": "`+id+`", "target_url": `))
		case i%1000 == 2: // no .bin
			id := src.addAsset(i, data)
			delete(src.sound, id)
			os.Remove(filepath.Join(src.dir, id+".bin"))
		case i%1000 == 3: // bytes that do not match the hash
			id := src.addAsset(i, data)
			delete(src.sound, id)
			mustWrite(t, src.dir, id+".bin", []byte(strings.ToUpper(string(data))))
		case i%1000 == 4: // a Snapshot and a null context
			src.add(i, data, map[string]string{}, ptr(`{"Snapshot":{"is_snapshot":true}}`), false)
		case i%1000 == 5:
			src.add(i, data, map[string]string{}, nil, false)
		case i%1000 == 6: // the seed's format: no hash anywhere
			c := fmt.Sprintf(`{"relative_path":%q,"key":%q,"file_size":%d}`,
				strings.TrimPrefix(assetKey(i), "assets/"), assetKey(i), len(data))
			src.add(i, data, map[string]string{}, &c, true)
		case i%1000 == 7: // the same asset as entry i-1 (the seed's) under another id
			dup := []byte(fmt.Sprintf("asset %d bytes", i-1))
			src.add(i, dup, map[string]string{"content-hash": sha256Hex(dup)}, assetJSON(i-1, len(dup)), false)
		case i%100 == 8: // known to be uploaded
			src.addAsset(i, data)
			uploaded = append(uploaded, assetKey(i)+" "+sha256Hex(data))
		default:
			src.addAsset(i, data)
		}
	}
	src.age(time.Now(), time.Minute)
	before := snapshotDir(t, src.dir)

	s := mustOpen(t, t.TempDir(), Options{fs: noSyncDisk{}})
	opts := ImportOptions{Uploaded: func(key, hash string) bool { return slices.Contains(uploaded, key+" "+hash) }}
	var calls, last int
	opts.Progress = func(done, total int) { calls++; last = done }
	sum, err := s.Import(src.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	broken := n / 1000 // of each kind
	wantUploaded := len(uploaded)
	want := ImportSummary{Imported: len(src.sound) - wantUploaded, AlreadyPending: broken, AlreadyUploaded: wantUploaded,
		Unsupported: 2 * broken, Corrupt: 3 * broken}
	if sum != want {
		t.Errorf("summary = %+v, want %+v", sum, want)
	}
	if calls != n+1 || last != n {
		t.Errorf("progress called %d times, last with %d", calls, last)
	}
	checkImported(t, s.Store, src, uploaded)
	if got := s.logs.FilterMessage("Skipped corrupt entry to import").Len(); got != 3*broken {
		t.Errorf("%d corrupt entries logged, want %d", got, 3*broken)
	}
	if after := snapshotDir(t, src.dir); !slices.Equal(after, before) {
		t.Errorf("the source folder changed")
	}

	again, err := s.Import(src.dir, opts)
	want = ImportSummary{AlreadyPending: want.Imported + broken, AlreadyUploaded: wantUploaded, Unsupported: 2 * broken, Corrupt: 3 * broken}
	if err != nil || again != want {
		t.Errorf("second run = %+v, %v; want %+v", again, err, want)
	}
	if got := s.Stats().Count; got != sum.Imported {
		t.Errorf("%d entries after the second run, want %d", got, sum.Imported)
	}
}

// checkImported checks that every sound entry of src is in s with its bytes, unless the index
// knows it as uploaded: nothing is lost.
func checkImported(t *testing.T, s *Store, src *source, uploaded []string) {
	t.Helper()
	for id, e := range src.sound {
		known := slices.Contains(uploaded, e.key+" "+e.hash)
		if s.Has(e.key, e.hash) == known {
			t.Errorf("%s (%s): pending %v, known uploaded %v", id, e.key, !known, known)
		}
	}
	for _, e := range s.List() {
		if e.AttemptCount != 0 || e.LastAttemptAt != 0 || e.Created().Before(time.Now().Add(-time.Hour)) {
			t.Errorf("%s did not start afresh: %+v", e.ID, e.Meta)
		}
		if b := readEntry(t, s, e.ID); sha256Hex(b) != e.Context.ContentHash {
			t.Errorf("%s: bytes do not match", e.ID)
		}
	}
}

func ptr(s string) *string { return &s }

// TestImportMove: with Move, each source pair whose asset is safe is removed, and the rest stay;
// a second run after a crash between the commit and the removal imports nothing twice.
func TestImportMove(t *testing.T) {
	src := newSource(t)
	for i := range 20 {
		src.addAsset(i, []byte(fmt.Sprintf("move %d", i)))
	}
	snapshot := src.add(20, []byte("snap"), map[string]string{}, ptr(`{"Snapshot":{"is_snapshot":true}}`), false)
	bad := src.addAsset(21, []byte("bad"))
	delete(src.sound, bad)
	mustWrite(t, src.dir, bad+".bin", []byte("BAD"))
	src.age(time.Now(), time.Minute)

	s := mustOpen(t, t.TempDir(), Options{})
	// The crash: entry 0 was committed to the store by an earlier run that stopped before
	// removing it from the source.
	first := src.sound[fmt.Sprintf("%08x-0000-4000-8000-%012d", 0, 0)]
	mustSaveData(t, s.Store, first.key, first.data)

	sum, err := s.Import(src.dir, ImportOptions{Move: true})
	want := ImportSummary{Imported: 19, AlreadyPending: 1, Unsupported: 1, Corrupt: 1, Removed: 20}
	if err != nil || sum != want {
		t.Fatalf("Import = %+v, %v; want %+v", sum, err, want)
	}
	left := []string{bad + ".bin", bad + ".json", snapshot + ".bin", snapshot + ".json"}
	slices.Sort(left)
	if got := listDir(t, src.dir); !slices.Equal(got, left) {
		t.Errorf("source after the move = %v, want %v", got, left)
	}
	if got := s.Stats().Count; got != 20 {
		t.Errorf("%d entries, want 20 (no duplicate)", got)
	}
	checkImported(t, s.Store, src, nil)
}

// mustSaveData saves data under key as the store's own capture would.
func mustSaveData(t *testing.T, s *Store, key string, data []byte) {
	t.Helper()
	c := assetContext(key, data)
	if _, _, err := s.Save(c, "https://fusou.dev/api/asset-sync/upload", nil, strings.NewReader(string(data))); err != nil {
		t.Fatal(err)
	}
}

// TestImportQuietPeriod: a .json changed within QuietPeriod (by the clock) stops the import
// before anything is read, unless Force.
func TestImportQuietPeriod(t *testing.T) {
	clock := newClock()
	src := newSource(t)
	for i := range 3 {
		src.addAsset(i, []byte(fmt.Sprintf("quiet %d", i)))
	}
	src.age(clock.Now(), time.Hour)
	recent := src.addAsset(3, []byte("recent"))
	at := clock.Now().Add(-QuietPeriod + time.Second)
	if err := os.Chtimes(filepath.Join(src.dir, recent+".json"), at, at); err != nil {
		t.Fatal(err)
	}

	s := mustOpen(t, t.TempDir(), Options{Now: clock.Now})
	sum, err := s.Import(src.dir, ImportOptions{})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), recent+".json") || sum != (ImportSummary{}) {
		t.Fatalf("Import = %+v, %v; want ErrBusy naming %s.json", sum, err, recent)
	}
	if s.Stats().Count != 0 {
		t.Errorf("a refused import saved entries")
	}

	clock.Add(time.Second) // now exactly QuietPeriod after the change
	if sum, err := s.Import(src.dir, ImportOptions{}); err != nil || sum.Imported != 4 {
		t.Errorf("Import after the quiet period = %+v, %v", sum, err)
	}
}

func TestImportForce(t *testing.T) {
	clock := newClock()
	src := newSource(t)
	src.addAsset(0, []byte("busy"))
	src.age(clock.Now(), 0) // changed just now
	s := mustOpen(t, t.TempDir(), Options{Now: clock.Now})
	if _, err := s.Import(src.dir, ImportOptions{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("Import = %v, want ErrBusy", err)
	}
	if sum, err := s.Import(src.dir, ImportOptions{Force: true}); err != nil || sum.Imported != 1 {
		t.Errorf("Import with Force = %+v, %v", sum, err)
	}
}

// TestImportFull: an import never evicts; it stops with ErrFull when the store is at its limits.
func TestImportFull(t *testing.T) {
	src := newSource(t)
	for i := range 10 {
		src.addAsset(i, []byte(fmt.Sprintf("full %d", i)))
	}
	src.age(time.Now(), time.Minute)
	s := mustOpen(t, t.TempDir(), Options{MaxFiles: 5})
	own := mustSave(t, s.Store, "assets/own.png", []byte("own"))
	sum, err := s.Import(src.dir, ImportOptions{Move: true})
	if !errors.Is(err, ErrFull) || sum.Imported != 4 || sum.Removed != 4 {
		t.Errorf("Import = %+v, %v; want 4 imported, then ErrFull", sum, err)
	}
	if _, err := s.Get(own.ID); err != nil || s.logs.FilterMessage("Discarded pending upload").Len() != 0 {
		t.Errorf("the import evicted an entry: %v", err)
	}
	if got := len(listDir(t, src.dir)); got != 12 {
		t.Errorf("%d files left in the source, want the 6 entries not imported", got)
	}
}

// TestImportFormats imports the golden entries: the assets in every format, the rest counted.
func TestImportFormats(t *testing.T) {
	src := t.TempDir()
	for _, tc := range formatCases {
		copyFormatCase(t, tc.name, src)
	}
	now := time.Now()
	ents, _ := os.ReadDir(src)
	for _, e := range ents {
		os.Chtimes(filepath.Join(src, e.Name()), now.Add(-time.Minute), now.Add(-time.Minute))
	}
	s := mustOpen(t, t.TempDir(), Options{})
	sum, err := s.Import(src, ImportOptions{})
	want := ImportSummary{Imported: 5, Unsupported: 3, Corrupt: 2}
	if err != nil || sum != want {
		t.Fatalf("Import = %+v, %v; want %+v", sum, err, want)
	}
	for _, tc := range formatCases {
		if tc.want == "asset" && !s.Has(tc.ctx.Key, sha256Hex(mustRead(t, filepath.Join("testdata", "formats", tc.name), idOf(t, tc.name)+".bin"))) {
			t.Errorf("%s not imported", tc.name)
		}
	}
	for _, e := range s.List() {
		mustDecodeFUSOU(t, mustRead(t, s.Dir(), e.ID+".json"))
	}
	if _, err := s.Import(s.Dir(), ImportOptions{Force: true}); err == nil {
		t.Errorf("Import of the store's own folder succeeded")
	}
}

// idOf returns the id of the golden entry name.
func idOf(t *testing.T, name string) string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join("testdata", "formats", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(ents[0].Name(), ".bin")
}
