package datadir

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestEnsureCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "fusou-app")
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("mode = %v, want 0700", fi.Mode().Perm())
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("Ensure left a 0755 data dir at %v", fi.Mode().Perm())
	}
}

func TestControlTokenMadeOnceAndPrivate(t *testing.T) {
	dir := t.TempDir()
	tok, err := ControlToken(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != 64 {
		t.Fatalf("token %d chars, want 64", len(tok))
	}
	fi, err := os.Stat(filepath.Join(dir, TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode = %v, want 0600", fi.Mode().Perm())
	}
	again, err := ControlToken(dir, "")
	if err != nil || again != tok {
		t.Errorf("second call = %q, %v; want the same token", again, err)
	}
	if read, err := ReadToken(dir); err != nil || read != tok {
		t.Errorf("ReadToken = %q, %v", read, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the token file", len(entries))
	}
}

func TestControlTokenConfiguredWinsAndWritesNothing(t *testing.T) {
	dir := t.TempDir()
	tok, err := ControlToken(dir, "configured-token-1234")
	if err != nil || tok != "configured-token-1234" {
		t.Fatalf("got %q, %v", tok, err)
	}
	if _, err := os.Stat(filepath.Join(dir, TokenFile)); !os.IsNotExist(err) {
		t.Errorf("a configured token must not be written to disk (stat err %v)", err)
	}
}

func TestControlTokenReplacesAnEmptyFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, TokenFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := ControlToken(dir, "")
	if err != nil || len(tok) != 64 {
		t.Fatalf("got %q, %v; want a fresh token", tok, err)
	}
}

// A control token with group or other bits is made 0600; a private one is left alone.
func TestTightenToken(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits mean nothing on Windows; the data dir's ACL protects the token there")
	}
	dir := t.TempDir()
	if fixed, err := TightenToken(dir); fixed || err != nil {
		t.Fatalf("no token: TightenToken = %v, %v", fixed, err)
	}
	if _, err := ControlToken(dir, ""); err != nil {
		t.Fatal(err)
	}
	if fixed, err := TightenToken(dir); fixed || err != nil {
		t.Fatalf("private token: TightenToken = %v, %v; want false, nil", fixed, err)
	}
	path := filepath.Join(dir, TokenFile)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if fixed, err := TightenToken(dir); !fixed || err != nil {
		t.Fatalf("0644 token: TightenToken = %v, %v; want true, nil", fixed, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("token mode %v, want 0600", fi.Mode().Perm())
	}
}
