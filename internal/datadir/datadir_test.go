package datadir

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/internal/private/privatetest"
)

func TestEnsureCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "fusou-app")
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("stat = %v, %v; want a folder", fi, err)
	}
	privatetest.Expose(t, dir)
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
	privatetest.SkipUnderWine(t, privatetest.WineNamedMergesParent)
	privatetest.WantPrivate(t, dir)
}

// Unix keeps its exact modes: 0700, and a private folder is left as it is.
func TestEnsureModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits mean nothing on Windows; TestEnsureCreatesPrivateDir checks the ACL")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", fi.Mode().Perm())
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o500 {
		t.Errorf("Ensure changed a private 0500 data dir to %v", fi.Mode().Perm())
	}
	_ = os.Chmod(dir, 0o700)
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
	privatetest.WantPrivate(t, filepath.Join(dir, TokenFile))
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

// A control token others may read is made private; a private one is left alone.
func TestTightenToken(t *testing.T) {
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
	privatetest.Expose(t, path)
	if fixed, err := TightenToken(dir); !fixed || err != nil {
		t.Fatalf("exposed token: TightenToken = %v, %v; want true, nil", fixed, err)
	}
	privatetest.WantPrivate(t, path)
	if fixed, err := TightenToken(dir); fixed || err != nil {
		t.Errorf("after tightening: TightenToken = %v, %v; want false, nil", fixed, err)
	}
}
