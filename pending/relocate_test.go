package pending

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestMoveOwnEntries moves a store that shares its folder with the FUSOU app's entries: ours
// (current and earlier format, rejected/, corrupt/) go, the app's stay, and the moved store opens
// with every entry.
func TestMoveOwnEntries(t *testing.T) {
	root := t.TempDir()
	from, to := filepath.Join(root, "fusou-app", "pending_uploads"), filepath.Join(root, "new", "pending_uploads")
	s := mustOpen(t, from, Options{})
	a := mustSave(t, s.Store, "assets/a.png", []byte("a"))
	b := mustSave(t, s.Store, "assets/b.png", []byte("b"))
	rejected := mustSave(t, s.Store, "assets/r.png", []byte("r"))
	if err := s.Reject(rejected.ID, "400 no"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	earlier, data := earlierEntry(1)
	mustWrite(t, from, earlier.ID+".json", mustMarshalEarlier(t, earlier))
	mustWrite(t, from, earlier.ID+".bin", data)
	app := copyFormatCase(t, "fusou", from)
	mustWrite(t, from, tempPrefix+"1.json", []byte("{"))
	// An earlier run was interrupted after moving b's .bin.
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	mustRename(t, from, b.ID+".bin", filepath.Join("..", "..", "new", "pending_uploads", b.ID+".bin"))

	n, err := MoveOwnEntries(from, to)
	if err != nil || n != 3 {
		t.Fatalf("MoveOwnEntries = %d, %v; want 3 entries", n, err)
	}
	if got := listDir(t, from); !slices.Equal(got, []string{".lock", app + ".bin", app + ".json"}) {
		t.Errorf("left in the app's folder: %v", got)
	}
	moved := mustOpen(t, to, Options{})
	if got := ids(moved.List()); !slices.Equal(got, sortedIDs(a, b, Entry{Meta: earlier})) {
		t.Errorf("moved store lists %v", got)
	}
	for _, e := range moved.List() {
		if e.FilePath != filepath.Join(to, e.ID+".bin") {
			t.Errorf("%s: file_path %s", e.ID, e.FilePath)
		}
	}
	if got := listDir(t, filepath.Join(to, rejectedDir)); len(got) != 2 {
		t.Errorf("rejected/ = %v", got)
	}
}

// TestMoveOwnEntriesLocked: a store in use is not moved.
func TestMoveOwnEntriesLocked(t *testing.T) {
	root := t.TempDir()
	from := filepath.Join(root, "old")
	s := mustOpen(t, from, Options{})
	mustSave(t, s.Store, "assets/a.png", []byte("a"))
	before := listDir(t, from)
	if n, err := MoveOwnEntries(from, filepath.Join(root, "new")); !errors.Is(err, ErrLocked) || n != 0 {
		t.Errorf("MoveOwnEntries = %d, %v; want ErrLocked", n, err)
	}
	if got := listDir(t, from); !slices.Equal(got, before) {
		t.Errorf("folder changed: %v", got)
	}
	if n, err := MoveOwnEntries(filepath.Join(root, "missing"), filepath.Join(root, "new")); n != 0 || err != nil {
		t.Errorf("MoveOwnEntries(missing) = %d, %v", n, err)
	}
}
