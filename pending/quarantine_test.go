package pending

import (
	"os"
	"path/filepath"
	"testing"
)

// rejected/ and corrupt/ entries are listed, marked, without the lock, and each folder can be
// purged on its own.
func TestQuarantineListAndPurge(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	e := mustSave(t, s.Store, "assets/kcs2/img/r.png", []byte("rejected bytes"))
	mustSave(t, s.Store, "assets/kcs2/img/k.png", []byte("kept bytes"))
	if err := s.Reject(e.ID, "415 Unsupported Media Type"); err != nil {
		t.Fatal(err)
	}
	bad := "22222222-2222-4222-8222-222222222222"
	if err := os.MkdirAll(filepath.Join(dir, corruptDir), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{bad + ".json": "{not json", bad + ".bin": "xyz"} {
		if err := os.WriteFile(filepath.Join(dir, corruptDir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	list, err := ListQuarantined(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("ListQuarantined = %+v, want one rejected and one corrupt entry", list)
	}
	r, c := list[0], list[1]
	if r.Where != Rejected || r.ID != e.ID || r.Key != "assets/kcs2/img/r.png" || r.Size != int64(len("rejected bytes")) ||
		r.LastError != "415 Unsupported Media Type" {
		t.Errorf("rejected entry listed as %+v", r)
	}
	if c.Where != Corrupt || c.ID != bad || c.Key != "" || c.Size != 3 {
		t.Errorf("corrupt entry listed as %+v", c)
	}

	if n, err := s.PurgeQuarantined(Rejected); n != 1 || err != nil {
		t.Fatalf("PurgeQuarantined(rejected) = %d, %v; want 1", n, err)
	}
	if list, _ := ListQuarantined(dir); len(list) != 1 || list[0].Where != Corrupt {
		t.Errorf("after purging rejected/: %+v, want only the corrupt entry", list)
	}
	if n, err := s.PurgeQuarantined(Corrupt); n != 1 || err != nil {
		t.Fatalf("PurgeQuarantined(corrupt) = %d, %v; want 1", n, err)
	}
	if list, _ := ListQuarantined(dir); len(list) != 0 {
		t.Errorf("after purging both: %+v", list)
	}
	if got := s.Stats().Count; got != 1 {
		t.Errorf("%d pending entries after the purges, want the kept one", got)
	}
	if _, err := s.PurgeQuarantined("pending"); err == nil {
		t.Error("PurgeQuarantined of another folder succeeded")
	}
}
