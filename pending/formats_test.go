package pending

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// formatCase is one golden entry under testdata/formats/<name>/: a .json in a format some
// program wrote, and its .bin.
type formatCase struct {
	name string
	// want is what the store makes of it: "asset" (listed, rewritten in the current format),
	// "unsupported" (kept aside untouched) or "corrupt" (moved to corrupt/).
	want   string
	ctx    Context // for an asset; ContentHash is checked against the .bin
	meta   Meta    // for an asset: the fields that must survive (created, attempts, last attempt, error)
	kind   string  // for an unsupported entry
	detail string  // for a corrupt entry: in the log line's detail
}

var formatCases = []formatCase{
	{name: "fusou", want: "asset",
		ctx: Context{RelativePath: "kcs2/img/common/common_itemicons.png", Key: "assets/kcs2/img/common/common_itemicons.png",
			FileSize: 26, ContentType: "image/png", FileName: "common_itemicons.png", DatasetID: "ds-7"},
		meta: Meta{CreatedAt: 1764633600, AttemptCount: 1, LastAttemptAt: 1764637200}},
	{name: "fusou-older", want: "asset",
		ctx: Context{RelativePath: "kcs2/resources/gauge/1.json", Key: "assets/kcs2/resources/gauge/1.json",
			FileSize: 44, ContentType: "application/json", FileName: "1.json"},
		meta: Meta{CreatedAt: 1764633601}},
	{name: "seed", want: "asset",
		ctx: Context{RelativePath: "kcs/images/ship.gif", Key: "assets/kcs/images/ship.gif",
			FileSize: 25, ContentType: "image/gif", FileName: "ship.gif"},
		meta: Meta{CreatedAt: 1764633602}},
	{name: "relative-path", want: "asset",
		ctx: Context{RelativePath: "kcs2/img/sally/map.webp", Key: "assets/kcs2/img/sally/map.webp",
			FileSize: 29, ContentType: "image/webp", FileName: "map.webp"},
		meta: Meta{CreatedAt: 1764633603, AttemptCount: 2, LastAttemptAt: 1764640000}},
	{name: "ours-earlier", want: "asset",
		ctx: Context{RelativePath: "kcs2/img/title/02.jpg", Key: "assets/kcs2/img/title/02.jpg",
			FileSize: 28, ContentType: "image/jpeg", FileName: "02.jpg"},
		meta: Meta{CreatedAt: 1764633604, AttemptCount: 3, LastAttemptAt: 1764641000, LastError: "503 Service Unavailable",
			Headers: map[string]string{"Origin": "https://fusou.dev", "Content-Type": "image/jpeg"}}},
	{name: "snapshot", want: "unsupported", kind: KindSnapshot},
	{name: "custom", want: "unsupported", kind: KindCustom},
	{name: "null-context", want: "unsupported", kind: KindNoContext},
	{name: "malformed", want: "corrupt", detail: "bad json"},
	{name: "wrong-file-path", want: "corrupt", detail: "file_path"},
}

// TestFormatsAtOpen opens a store holding each golden entry and checks what became of it.
func TestFormatsAtOpen(t *testing.T) {
	for _, tc := range formatCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			id := copyFormatCase(t, tc.name, dir)
			before := mustRead(t, dir, id+".json")
			bin := mustRead(t, dir, id+".bin")
			clock := newClock()
			s := mustOpen(t, dir, Options{Now: clock.Now})
			switch tc.want {
			case "asset":
				checkFormatAsset(t, s, tc, id, bin)
			case "unsupported":
				checkFormatUnsupported(t, s, tc, id, before)
			case "corrupt":
				if len(s.List())+len(s.Unsupported()) != 0 {
					t.Errorf("corrupt entry listed")
				}
				if got := listDir(t, filepath.Join(dir, corruptDir)); !slices.Equal(got, []string{id + ".bin", id + ".json"}) {
					t.Errorf("corrupt/ = %v", got)
				}
				assertDiscardLogged(t, s, tc.detail)
			}
		})
	}
}

// checkFormatAsset checks an entry the store must upload: listed with its context and the bytes'
// hash, its history kept, and its .json rewritten so that the FUSOU app reads it from this store.
func checkFormatAsset(t *testing.T, s testStore, tc formatCase, id string, bin []byte) {
	t.Helper()
	list := s.List()
	if len(list) != 1 || len(s.Unsupported()) != 0 {
		t.Fatalf("List = %v, Unsupported = %v", list, s.Unsupported())
	}
	e := list[0]
	want := tc.ctx
	want.ContentHash = sha256Hex(bin)
	if e.ID != id || e.Context != want {
		t.Errorf("entry %s context\n%+v\nwant\n%+v", e.ID, e.Context, want)
	}
	m := e.Meta
	if m.CreatedAt != tc.meta.CreatedAt || m.AttemptCount != tc.meta.AttemptCount ||
		m.LastAttemptAt != tc.meta.LastAttemptAt || m.LastError != tc.meta.LastError ||
		m.TargetURL != "https://fusou.dev/api/asset-sync/upload" {
		t.Errorf("meta = %+v, want the file's times, attempts and error", m)
	}
	for k, v := range tc.meta.Headers {
		if m.Headers[k] != v {
			t.Errorf("header %s = %q, want %q", k, m.Headers[k], v)
		}
	}
	if b := readEntry(t, s.Store, id); !bytes.Equal(b, bin) {
		t.Errorf("bytes changed")
	}
	raw := mustRead(t, s.Dir(), id+".json")
	fm := mustDecodeFUSOU(t, raw)
	if fm.FilePath != filepath.Join(s.Dir(), id+".bin") || fm.Headers["content-hash"] != want.ContentHash {
		t.Errorf("rewritten file: file_path %q, headers %v", fm.FilePath, fm.Headers)
	}
	if s.logs.FilterMessage("Rewrote pending metadata in the current format").Len() != 1 {
		t.Errorf("rewrite not logged")
	}
	s.Close()

	// Reopened, the rewritten file reads back the same, and needs no more rewriting.
	s2 := mustOpen(t, s.Dir(), Options{})
	got, err := s2.Get(id)
	if err != nil || !entryEqual(got, e) {
		t.Errorf("after reopen: %v\n%+v\nwant\n%+v", err, got, e)
	}
	if s2.logs.FilterMessage("Rewrote pending metadata in the current format").Len() != 0 {
		t.Errorf("rewritten again")
	}
}

// checkFormatUnsupported checks an entry the store must not upload: kept aside, untouched, until
// the retry service discards it (at its TTL), by id.
func checkFormatUnsupported(t *testing.T, s testStore, tc formatCase, id string, before []byte) {
	t.Helper()
	un := s.Unsupported()
	if len(s.List()) != 0 || len(un) != 1 || un[0].ID != id || un[0].Unsupported != tc.kind {
		t.Fatalf("List = %v, Unsupported = %+v; want only %s as %s", s.List(), un, id, tc.kind)
	}
	if _, err := s.Get(id); err == nil {
		t.Errorf("Get returned an unsupported entry")
	}
	if after := mustRead(t, s.Dir(), id+".json"); !bytes.Equal(after, before) {
		t.Errorf(".json changed at open")
	}
	if err := s.Discard(id, ReasonExpired); err != nil {
		t.Fatalf("Discard(%s) = %v", id, err)
	}
	if got := listDir(t, s.Dir()); !slices.Equal(got, []string{".lock"}) {
		t.Errorf("folder after the discard = %v", got)
	}
	if len(s.Unsupported()) != 0 || discardLogs(s.logs)[id] != ReasonExpired {
		t.Errorf("Unsupported = %v, discard logs %v", s.Unsupported(), discardLogs(s.logs))
	}
	if lines := s.logs.FilterMessage("Discarded pending upload").All(); len(lines) != 1 || lines[0].ContextMap()["kind"] != tc.kind {
		t.Errorf("discard log = %v, want the entry's kind %s", lines, tc.kind)
	}
	if err := s.Discard(id, ReasonExpired); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Discard = %v, want ErrNotFound", err)
	}
}

// TestFormatsReadOnly: a read-only store reads every format the same way and changes nothing.
func TestFormatsReadOnly(t *testing.T) {
	dir := t.TempDir()
	want := map[string]string{} // id → "asset", kind, or "" when skipped
	for _, tc := range formatCases {
		id := copyFormatCase(t, tc.name, dir)
		want[id] = map[string]string{"asset": "asset", "unsupported": tc.kind}[tc.want]
	}
	before := snapshotDir(t, dir)
	s := mustOpen(t, dir, Options{ReadOnly: true})
	got := map[string]string{}
	for _, e := range s.List() {
		got[e.ID] = "asset"
		if !validHash(e.Context.ContentHash) {
			t.Errorf("%s: hash %q", e.ID, e.Context.ContentHash)
		}
	}
	for _, e := range s.Unsupported() {
		got[e.ID] = e.Unsupported
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("%s: read as %q, want %q", id, got[id], w)
		}
	}
	if after := snapshotDir(t, dir); !slices.Equal(after, before) {
		t.Errorf("a read-only open changed the folder")
	}
}

// TestMigrateEarlierStore: a store written by this program's earlier versions (relative
// file_path, flat context with content_hash) is rewritten at open in the current format, entry
// by entry, with nothing lost.
func TestMigrateEarlierStore(t *testing.T) {
	dir := t.TempDir()
	const n = 200
	earlier := map[string]Meta{}
	for i := range n {
		m, data := earlierEntry(i)
		mustWrite(t, dir, m.ID+".json", mustMarshalEarlier(t, m))
		mustWrite(t, dir, m.ID+".bin", data)
		earlier[m.ID] = m
	}
	s := mustOpen(t, dir, Options{})
	if got := len(s.List()); got != n {
		t.Fatalf("%d entries after migration, want %d", got, n)
	}
	for _, e := range s.List() {
		m := earlier[e.ID]
		if e.CreatedAt != m.CreatedAt || e.AttemptCount != m.AttemptCount || e.LastAttemptAt != m.LastAttemptAt ||
			e.LastError != m.LastError || e.Headers["Origin"] != "https://fusou.dev" {
			t.Errorf("%s: %+v lost something of %+v", e.ID, e.Meta, m)
		}
		fm := mustDecodeFUSOU(t, mustRead(t, dir, e.ID+".json"))
		if fm.Headers["content-hash"] != e.Context.ContentHash || fm.FilePath != filepath.Join(dir, e.ID+".bin") {
			t.Errorf("%s not in the current format: %+v", e.ID, fm)
		}
	}
	for _, name := range listDir(t, dir) {
		if strings.HasPrefix(name, tempPrefix) {
			t.Errorf("temp file %s left", name)
		}
	}
}

// earlierEntry is entry i as this program's earlier versions wrote it, and its bytes.
func earlierEntry(i int) (Meta, []byte) {
	data := []byte(strings.Repeat("x", i+1))
	c := assetContext("assets/kcs2/img/"+strings.Repeat("a", i%7+1)+".png", data)
	c.Key += "?" + string(rune('a'+i%26)) // distinct keys
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
	ctx := fmt.Sprintf(`{"relative_path":%q,"key":%q,"file_size":%d,"content_hash":%q,"content_type":"image/png","file_name":%q}`,
		c.RelativePath, c.Key, len(data), c.ContentHash, c.FileName)
	m := Meta{ID: id, TargetURL: "https://fusou.dev/api/asset-sync/upload",
		Headers: map[string]string{"Origin": "https://fusou.dev", "Content-Type": "image/png"}, CreatedAt: 1764633600 + int64(i),
		AttemptCount: i % 4, FilePath: id + ".bin", Context: ctx}
	if m.AttemptCount > 0 {
		m.LastAttemptAt, m.LastError = 1764640000+int64(i), "503 Service Unavailable"
	}
	return m, data
}

// mustMarshalEarlier writes m with the earlier versions' encoding, which Meta's field tags still
// spell: every field, last_attempt_at 0 before the first attempt.
func mustMarshalEarlier(t *testing.T, m Meta) []byte {
	t.Helper()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// copyFormatCase copies testdata/formats/name into dir and returns the entry's id.
func copyFormatCase(t *testing.T, name, dir string) string {
	t.Helper()
	src := filepath.Join("testdata", "formats", name)
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, e := range ents {
		mustWrite(t, dir, e.Name(), mustRead(t, src, e.Name()))
		if stem, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			id = stem
		}
	}
	return id
}

// TestPurgeUnsupported: Purge (purge --all) leaves an unsupported entry, as it leaves every entry
// it would not upload; Discard by id removes it, and it stays gone after a reopen.
func TestPurgeUnsupported(t *testing.T) {
	dir := t.TempDir()
	id := copyFormatCase(t, "custom", dir)
	s := mustOpen(t, dir, Options{})
	asset := mustSave(t, s.Store, "assets/a.png", []byte("a"))
	if n, err := s.Purge(nil); n != 1 || err != nil || len(s.Unsupported()) != 1 {
		t.Errorf("Purge = %d, %v; unsupported left %d", n, err, len(s.Unsupported()))
	}
	if _, err := s.Get(asset.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Purge left the asset: %v", err)
	}
	if err := s.Discard(id, ReasonExpired); err != nil || len(s.Unsupported()) != 0 {
		t.Errorf("Discard = %v; unsupported left %d", err, len(s.Unsupported()))
	}
	if got := listDir(t, dir); slices.ContainsFunc(got, func(n string) bool { return strings.HasPrefix(n, id) }) {
		t.Errorf("files left: %v", got)
	}
	s.Close()
	if s2 := mustOpen(t, dir, Options{}); len(s2.Unsupported()) != 0 {
		t.Errorf("the discarded entry came back: %v", s2.Unsupported())
	}
}
