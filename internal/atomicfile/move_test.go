package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/internal/private"
	"github.com/fusou-proxy/fusou-proxy/internal/private/privatetest"
)

// crossDevice makes every rename fail as it does between two file systems, until the test ends.
func crossDevice(t *testing.T) {
	rename = func(oldpath, newpath string) error {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EXDEV}
	}
	t.Cleanup(func() { rename = os.Rename })
}

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := private.File(p); err != nil {
			t.Fatal(err)
		}
	}
}

func checkTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, want := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
			continue
		}
		privatetest.WantPrivate(t, p)
	}
}

func TestMoveRenames(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"ca/fusou-ca.pem": "cert", "ca/old/key.pem": "key"}
	writeTree(t, filepath.Join(dir, "src"), files)
	if err := Move(filepath.Join(dir, "src", "ca"), filepath.Join(dir, "dst")); err != nil {
		t.Fatal(err)
	}
	checkTree(t, filepath.Join(dir, "dst"), map[string]string{"fusou-ca.pem": "cert", "old/key.pem": "key"})
	if _, err := os.Stat(filepath.Join(dir, "src", "ca")); !os.IsNotExist(err) {
		t.Errorf("source still there: %v", err)
	}
}

// TestMoveAcrossDevices: when renames fail, files are copied and removed, and a move that was
// interrupted (a partial copy left at the destination) finishes when run again.
func TestMoveAcrossDevices(t *testing.T) {
	crossDevice(t)
	dir := t.TempDir()
	files := map[string]string{"a.bin": "aaaa", "sub/b.json": "{}", "sub/deeper/c": "c"}
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	writeTree(t, src, files)
	writeTree(t, dst, map[string]string{"sub/b.json": "{", "other": "kept"}) // the interrupted copy
	privatetest.Expose(t, filepath.Join(dst, "sub", "b.json"))

	if err := Move(src, dst); err != nil {
		t.Fatal(err)
	}
	checkTree(t, dst, files)
	checkTree(t, dst, map[string]string{"other": "kept"})
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("source still there: %v", err)
	}
	if err := Move(src, dst); !os.IsNotExist(err) {
		t.Errorf("Move of a missing source = %v, want not-exist", err)
	}
}
