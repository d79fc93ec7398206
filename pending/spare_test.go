package pending

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// spareFiles lists the store folder's spare files.
func spareFiles(tb testing.TB, dir string) []string {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), sparePrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// A delivered entry's files are reused: the next entry's .json temp file and a spool file
// taken with TakeSpare are the same inodes, emptied, and no spare outlives Close.
func TestDeleteKeepsFilesForReuse(t *testing.T) {
	root := t.TempDir()
	s := mustOpen(t, filepath.Join(root, "pending_uploads"), Options{})
	data := bytes.Repeat([]byte("x"), 50<<10)
	a := mustSave(t, s.Store, "assets/a.png", data)
	binBefore, err := os.Stat(filepath.Join(s.Dir(), a.ID+".bin"))
	if err != nil {
		t.Fatal(err)
	}
	jsonBefore, err := os.Stat(filepath.Join(s.Dir(), a.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	if got := spareFiles(t, s.Dir()); len(got) != 2 {
		t.Fatalf("spares after one delete = %v, want the .json and the .bin", got)
	}

	// The .bin went back last, so it is taken first.
	spool := filepath.Join(root, "spool-file")
	f, ok := s.TakeSpare(spool)
	if !ok {
		t.Fatal("TakeSpare found no spare")
	}
	fi, err := f.Stat()
	if err != nil || !os.SameFile(fi, binBefore) || fi.Size() != 0 {
		t.Errorf("TakeSpare gave %v (size %d, err %v), want the deleted .bin emptied", fi.Name(), fi.Size(), err)
	}
	if fi.Mode().Perm() != fileMode {
		t.Errorf("spare mode = %v", fi.Mode().Perm())
	}
	f.Close()

	// The next entry's .json temp file is the deleted .json.
	b := mustSave(t, s.Store, "assets/b.png", []byte("b"))
	var reused bool
	for _, name := range []string{b.ID + ".json", b.ID + ".bin"} {
		fi, err := os.Stat(filepath.Join(s.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		reused = reused || os.SameFile(fi, jsonBefore)
	}
	if !reused {
		t.Error("the new entry did not reuse the deleted .json")
	}
	if got := readEntry(t, s.Store, b.ID); string(got) != "b" {
		t.Errorf("new entry's bytes = %q", got)
	}
	if got := spareFiles(t, s.Dir()); len(got) != 0 {
		t.Errorf("spares left = %v", got)
	}
	if _, ok := s.TakeSpare(filepath.Join(root, "another")); ok {
		t.Error("TakeSpare with an empty pool reported a file")
	}

	// Close removes the pool's files.
	if err := s.Delete(b.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := spareFiles(t, s.Dir()); len(got) != 0 {
		t.Errorf("spares after Close = %v", got)
	}
}

// The pool is bounded in files and in the size of what it keeps, and Open sweeps spares a
// crash left behind.
func TestSparePoolBounds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pending_uploads")
	s := mustOpen(t, dir, Options{})
	big := mustSave(t, s.Store, "assets/big.png", bytes.Repeat([]byte("b"), maxSpareBytes+1))
	if err := s.Delete(big.ID); err != nil {
		t.Fatal(err)
	}
	if got := spareFiles(t, dir); len(got) != 1 { // its .json only
		t.Fatalf("spares after deleting a large entry = %v", got)
	}
	var ids []string
	for i := range maxSpares {
		ids = append(ids, mustSave(t, s.Store, fmt.Sprintf("assets/%d.png", i), []byte{byte(i)}).ID)
	}
	for _, id := range ids {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(spareFiles(t, dir)); got != maxSpares {
		t.Errorf("spares after %d deletes = %d, want the cap %d", len(ids), got, maxSpares)
	}

	// A crash leaves the pool on disk: the next Open removes it.
	left := spareFiles(t, dir)
	s.Store.mu.Lock()
	s.Store.spares = nil // as if the process died: Close does not see them
	s.Store.mu.Unlock()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := spareFiles(t, dir); len(got) != len(left) {
		t.Fatalf("spares on disk = %d, want %d", len(got), len(left))
	}
	s2 := mustOpen(t, dir, Options{})
	if got := spareFiles(t, dir); len(got) != 0 {
		t.Errorf("spares after reopen = %v", got)
	}
	if st := s2.Stats(); st.Count != 0 {
		t.Errorf("stats after reopen = %+v", st)
	}
}
