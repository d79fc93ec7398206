package private_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/internal/private"
	"github.com/fusou-proxy/fusou-proxy/internal/private/privatetest"
)

func TestFileMadePrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.token")
	if err := os.WriteFile(path, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	privatetest.Expose(t, path)
	if err := private.File(path); err != nil {
		t.Fatal(err)
	}
	privatetest.WantPrivate(t, path)
	if b, err := os.ReadFile(path); err != nil || string(b) != "secret" {
		t.Errorf("the owner cannot read it back: %q, %v", b, err)
	}
}

func TestDirMadePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	privatetest.Expose(t, dir)
	if err := private.Dir(dir); err != nil {
		t.Fatal(err)
	}
	// The owner can still use it.
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600); err != nil {
		t.Errorf("the owner cannot write in it: %v", err)
	}
	privatetest.SkipUnderWine(t, privatetest.WineNamedMergesParent)
	privatetest.WantPrivate(t, dir)
}

func TestCheckNamesWhatIsWrong(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	privatetest.Expose(t, path)
	err := private.Check(path)
	if !errors.Is(err, private.ErrExposed) || !strings.Contains(err.Error(), path) {
		t.Errorf("Check = %v, want ErrExposed naming the path", err)
	}
	if err := private.Check(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Check of a missing file = %v, want not-exist", err)
	}
}

// A temp file is private from the moment it exists, even in a folder open to everyone.
func TestCreateTemp(t *testing.T) {
	dir := t.TempDir()
	privatetest.Expose(t, dir)
	f, err := private.CreateTemp(dir, ".key.pem.tmp-*.x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	privatetest.WantPrivate(t, f.Name())
	base := filepath.Base(f.Name())
	if filepath.Dir(f.Name()) != dir || !strings.HasPrefix(base, ".key.pem.tmp-") || !strings.HasSuffix(base, ".x") {
		t.Errorf("temp file %s does not follow the pattern", f.Name())
	}
	if _, err := f.WriteString("secret"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(f.Name()); err != nil || string(b) != "secret" {
		t.Errorf("read back %q, %v", b, err)
	}
	g, err := private.CreateTemp(dir, ".key.pem.tmp-*.x")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Name() == f.Name() {
		t.Error("two temp files with one name")
	}
}
