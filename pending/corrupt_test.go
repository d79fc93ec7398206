package pending

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCorruptionAtOpen damages one entry in each way SPEC §6 names, reopens the store and checks
// where the files ended up and what was logged.
func TestCorruptionAtOpen(t *testing.T) {
	const other = "22222222-2222-4222-8222-222222222222"
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string, e Entry)
		// where the entry's files must end: "corrupt" (both moved), "removed", or "kept"
		want   string
		detail string // in the log line's detail field
	}{
		{"truncated json", func(t *testing.T, dir string, e Entry) {
			raw := mustRead(t, dir, e.ID+".json")
			mustWrite(t, dir, e.ID+".json", raw[:len(raw)/2])
		}, "corrupt", "bad json"},
		{"garbage json", func(t *testing.T, dir string, e Entry) {
			mustWrite(t, dir, e.ID+".json", []byte("\x00\xffnot json at all"))
		}, "corrupt", "bad json"},
		{"empty json", func(t *testing.T, dir string, e Entry) {
			mustWrite(t, dir, e.ID+".json", nil)
		}, "corrupt", "bad json"},
		{"huge json", func(t *testing.T, dir string, e Entry) {
			mustWrite(t, dir, e.ID+".json", bytes.Repeat([]byte(" "), maxMetaBytes+10))
		}, "corrupt", "limit"},
		{"truncated bin", func(t *testing.T, dir string, e Entry) {
			if err := os.Truncate(filepath.Join(dir, e.ID+".bin"), 3); err != nil {
				t.Fatal(err)
			}
		}, "corrupt", ".bin is 3 bytes"},
		{"parent file_path", func(t *testing.T, dir string, e Entry) {
			e.FilePath = "../../etc/passwd"
			writeJSON(t, dir, e.Meta)
		}, "corrupt", "file_path"},
		{"file_path naming another file", func(t *testing.T, dir string, e Entry) {
			e.FilePath = filepath.Join(dir, "other.bin")
			writeJSON(t, dir, e.Meta)
		}, "corrupt", "file_path"},
		{"file_path from another folder is rewritten", func(t *testing.T, dir string, e Entry) {
			e.FilePath = `C:\Users\u\AppData\Roaming\fusou-app\pending_uploads\` + e.ID + ".bin"
			writeJSON(t, dir, e.Meta)
		}, "kept", ""},
		{"symlink bin", func(t *testing.T, dir string, e Entry) {
			target := filepath.Join(t.TempDir(), "target")
			mustWriteFile(t, target, bytes.Repeat([]byte("s"), int(e.Context.FileSize)))
			os.Remove(filepath.Join(dir, e.ID+".bin"))
			symlinkOrSkip(t, target, filepath.Join(dir, e.ID+".bin"))
		}, "corrupt", "not a regular file"},
		{"directory bin", func(t *testing.T, dir string, e Entry) {
			os.Remove(filepath.Join(dir, e.ID+".bin"))
			if err := os.Mkdir(filepath.Join(dir, e.ID+".bin"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, "corrupt", "not a regular file"},
		{"symlink json", func(t *testing.T, dir string, e Entry) {
			target := filepath.Join(t.TempDir(), "meta")
			mustWriteFile(t, target, mustRead(t, dir, e.ID+".json"))
			os.Remove(filepath.Join(dir, e.ID+".json"))
			symlinkOrSkip(t, target, filepath.Join(dir, e.ID+".json"))
		}, "corrupt", "not a regular file"},
		{"id not a uuid", func(t *testing.T, dir string, e Entry) {
			m := e.Meta
			m.ID, m.FilePath = "evil", "evil.bin"
			writeJSON(t, dir, m)
			mustRename(t, dir, e.ID+".bin", "evil.bin")
			os.Remove(filepath.Join(dir, e.ID+".json"))
		}, "corrupt", "not a UUID"},
		{"id differs from file name", func(t *testing.T, dir string, e Entry) {
			mustRename(t, dir, e.ID+".json", other+".json")
			mustRename(t, dir, e.ID+".bin", other+".bin")
		}, "corrupt", "does not match"},
		{"bad context", func(t *testing.T, dir string, e Entry) {
			e.Meta.Context = `{"key": 5}`
			writeJSON(t, dir, e.Meta)
		}, "corrupt", "context"},
		{"json without bin", func(t *testing.T, dir string, e Entry) {
			os.Remove(filepath.Join(dir, e.ID+".bin"))
		}, "removed", "no .bin"},
		{"altered bin is found later, not at open", func(t *testing.T, dir string, e Entry) {
			raw := mustRead(t, dir, e.ID+".bin")
			raw[0] ^= 0xff
			mustWrite(t, dir, e.ID+".bin", raw)
		}, "kept", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, Options{})
			good := mustSave(t, s.Store, "assets/good.png", []byte("good bytes"))
			e := mustSave(t, s.Store, "assets/victim.png", []byte("victim bytes"))
			s.Close()
			tt.damage(t, dir, e)
			before := listDir(t, dir)

			s2 := mustOpen(t, dir, Options{})
			wantIDs := []string{good.ID}
			if tt.want == "kept" {
				wantIDs = sortedIDs(good, e)
			}
			if got := ids(s2.List()); !slices.Equal(got, wantIDs) {
				t.Errorf("List = %v, want %v", got, wantIDs)
			}
			moved := slices.DeleteFunc(slices.Clone(before), func(n string) bool {
				return n == ".lock" || strings.HasPrefix(n, good.ID)
			})
			after := listDir(t, dir)
			corrupt := listDir(t, filepath.Join(dir, corruptDir))
			switch tt.want {
			case "corrupt":
				if !slices.Equal(corrupt, moved) {
					t.Errorf("corrupt/ = %v, want %v", corrupt, moved)
				}
				for _, n := range moved {
					if slices.Contains(after, n) {
						t.Errorf("%s still in the store", n)
					}
				}
			case "removed":
				if len(corrupt) != 0 || slices.ContainsFunc(after, func(n string) bool { return strings.HasPrefix(n, e.ID) }) {
					t.Errorf("store %v, corrupt/ %v: want the entry removed", after, corrupt)
				}
			case "kept":
				if got, err := s2.Get(e.ID); err != nil || got.FilePath != filepath.Join(dir, e.ID+".bin") {
					t.Errorf("Get = %+v, %v; want file_path %s", got.Meta, err, filepath.Join(dir, e.ID+".bin"))
				}
				if len(corrupt) != 0 || !slices.Equal(after, before) {
					t.Errorf("store %v, corrupt/ %v: want it untouched", after, corrupt)
				}
			}
			if tt.want != "kept" {
				assertDiscardLogged(t, s2, tt.detail)
			} else if n := s2.logs.FilterMessage("Discarded pending upload").Len(); n != 0 {
				t.Errorf("%d discard lines for a sound-looking entry", n)
			}
		})
	}
}

// assertDiscardLogged checks for one "Discarded pending upload" line, reason corrupt, whose detail
// holds detail.
func assertDiscardLogged(t *testing.T, s testStore, detail string) {
	t.Helper()
	lines := s.logs.FilterMessage("Discarded pending upload").All()
	if len(lines) != 1 {
		t.Fatalf("%d discard lines, want 1: %v", len(lines), lines)
	}
	m := lines[0].ContextMap()
	if m["reason"] != ReasonCorrupt || !strings.Contains(m["detail"].(string), detail) {
		t.Errorf("log fields = %v, want reason corrupt and a detail holding %q", m, detail)
	}
}

// TestAlteredBinCaughtOnOpen: a .bin of the right size but wrong bytes passes Open of the store
// and is caught by the hash check when read for upload.
func TestAlteredBinCaughtOnOpen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	e := mustSave(t, s.Store, "assets/a.png", []byte("original"))
	mustWrite(t, dir, e.ID+".bin", []byte("ORIGINAL"))

	_, err := s.Open(e.ID)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open(altered) = %v, want ErrCorrupt", err)
	}
	if _, err := s.Get(e.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("altered entry still indexed: %v", err)
	}
	if got := listDir(t, filepath.Join(dir, corruptDir)); !slices.Equal(got, []string{e.ID + ".bin", e.ID + ".json"}) {
		t.Errorf("corrupt/ = %v", got)
	}
	assertDiscardLogged(t, s, "sha256")

	// A symlink swapped in while running is caught the same way, and not followed.
	e2 := mustSave(t, s.Store, "assets/b.png", []byte("bbbb"))
	target := filepath.Join(t.TempDir(), "t")
	mustWriteFile(t, target, []byte("bbbb"))
	os.Remove(filepath.Join(dir, e2.ID+".bin"))
	symlinkOrSkip(t, target, filepath.Join(dir, e2.ID+".bin"))
	if _, err := s.Open(e2.ID); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open(symlink) = %v, want ErrCorrupt", err)
	}
	if got, _ := os.ReadFile(target); string(got) != "bbbb" {
		t.Errorf("symlink target changed")
	}
}

func TestStrayFilesAtOpen(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	s := mustOpen(t, dir, Options{Now: clock.Now})
	keep := mustSave(t, s.Store, "assets/a", []byte("a"))
	dup := mustSave(t, s.Store, "assets/dup", []byte("dup"))
	s.Close()

	mustWrite(t, dir, tempPrefix+"123.bin", []byte("half a write"))
	mustWrite(t, dir, tempPrefix+"456.json", []byte(`{"id":`))
	const oldOrphan = "33333333-3333-4333-8333-333333333333.bin"
	const youngOrphan = "44444444-4444-4444-8444-444444444444.bin"
	mustWrite(t, dir, oldOrphan, []byte("old"))
	mustWrite(t, dir, youngOrphan, []byte("young"))
	now := time.Now()
	if err := os.Chtimes(filepath.Join(dir, oldOrphan), now, now.Add(-2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, dir, "README.txt", []byte("not ours: left alone"))
	// A second entry for (key, hash) that only another writer could have made: the newer goes.
	twin := dup.Meta
	twin.ID = "55555555-5555-4555-8555-555555555555"
	twin.FilePath = twin.ID + ".bin"
	twin.CreatedAt++
	writeJSON(t, dir, twin)
	mustWrite(t, dir, twin.ID+".bin", []byte("dup"))

	s2 := mustOpen(t, dir, Options{}) // real clock: the orphans' ages are real
	want := []string{".lock", "README.txt", dup.ID + ".bin", dup.ID + ".json", keep.ID + ".bin", keep.ID + ".json", youngOrphan}
	slices.Sort(want)
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Errorf("folder =\n%v\nwant\n%v", got, want)
	}
	removed := map[string]string{}
	for _, l := range s2.logs.FilterMessage("Removed stray pending file").All() {
		m := l.ContextMap()
		removed[m["file"].(string)] = m["reason"].(string)
	}
	wantRemoved := map[string]string{tempPrefix + "123.bin": "temp file", tempPrefix + "456.json": "temp file", oldOrphan: "orphan .bin"}
	if !mapsEqual(removed, wantRemoved) {
		t.Errorf("removal logs = %v, want %v", removed, wantRemoved)
	}
	if s2.logs.FilterMessage("Removed duplicate pending upload").Len() != 1 {
		t.Errorf("duplicate removal not logged")
	}
	if got := ids(s2.List()); !slices.Equal(got, sortedIDs(keep, dup)) {
		t.Errorf("List = %v", got)
	}
}

func mustRead(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	mustWriteFile(t, filepath.Join(dir, name), data)
}

func mustWriteFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustRename(t *testing.T, dir, from, to string) {
	t.Helper()
	if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
		t.Fatal(err)
	}
}

// TestInterruptedReject: a crash between moving the .bin to rejected/ and removing the pending
// .json is finished at open, not reported as corrupt.
func TestInterruptedReject(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	e := mustSave(t, s.Store, "assets/a.png", []byte("refused"))
	s.Close()
	if err := os.Mkdir(filepath.Join(dir, rejectedDir), 0o700); err != nil {
		t.Fatal(err)
	}
	m := e.Meta
	m.LastError = "400 no"
	writeJSON(t, filepath.Join(dir, rejectedDir), m)
	mustRename(t, dir, e.ID+".bin", filepath.Join(rejectedDir, e.ID+".bin"))
	mustWrite(t, filepath.Join(dir, rejectedDir), tempPrefix+"9.json", []byte("{"))

	s2 := mustOpen(t, dir, Options{})
	if s2.Stats().Count != 0 || s2.logs.FilterMessage("Discarded pending upload").Len() != 0 ||
		s2.logs.FilterMessage("Finished interrupted rejection").Len() != 1 {
		t.Errorf("stats %+v, logs %v", s2.Stats(), s2.logs.All())
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{".lock", rejectedDir}) {
		t.Errorf("folder = %v", got)
	}
	if got := listDir(t, filepath.Join(dir, rejectedDir)); !slices.Equal(got, []string{e.ID + ".bin", e.ID + ".json"}) {
		t.Errorf("rejected/ = %v", got)
	}
}
