package datadir

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
)

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustHave(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Errorf("%s = %q, %v; want %q", path, got, err, want)
	}
}

// fakePending moves nothing and records its call.
type fakePending struct{ from, to string }

func (f *fakePending) move(from, to string) (int, error) {
	f.from, f.to = from, to
	return 0, nil
}

// TestDataDirMovedOnce: our files move from fusou-app/ to fusou-proxy/, the app's stay, and a
// second call does nothing.
func TestDataDirMovedOnce(t *testing.T) {
	base := t.TempDir()
	old, def := filepath.Join(base, OldDefaultName), filepath.Join(base, DefaultName)
	mustWrite(t, filepath.Join(old, CADir, caMarker), "cert")
	mustWrite(t, filepath.Join(old, CADir, "fusou-ca-key.pem"), "key")
	mustWrite(t, filepath.Join(old, TokenFile), "token")
	mustWrite(t, filepath.Join(old, IndexFile), "{}")
	mustWrite(t, filepath.Join(old, SpoolDir, "1.part"), "spool")
	mustWrite(t, filepath.Join(old, "user", "configs.toml"), "the app's")
	mustWrite(t, filepath.Join(old, "log", "app.log"), "the app's")

	var p fakePending
	moved, err := MoveOldDefault(old, def, p.move)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{CADir, TokenFile, IndexFile, SpoolDir}; !slices.Equal(moved, want) {
		t.Errorf("moved %v, want %v", moved, want)
	}
	if p.from != filepath.Join(old, PendingDir) || filepath.Base(p.to) != PendingDir {
		t.Errorf("pending moved from %s to %s", p.from, p.to)
	}
	mustHave(t, filepath.Join(def, CADir, caMarker), "cert")
	mustHave(t, filepath.Join(def, CADir, "fusou-ca-key.pem"), "key")
	mustHave(t, filepath.Join(def, TokenFile), "token")
	mustHave(t, filepath.Join(def, SpoolDir, "1.part"), "spool")
	mustHave(t, filepath.Join(old, "user", "configs.toml"), "the app's")
	mustHave(t, filepath.Join(old, "log", "app.log"), "the app's")
	// On Windows the data dir's ACL is Ensure's job, which every command runs after the move.
	if fi, err := os.Stat(def); err != nil || runtime.GOOS != "windows" && fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir: %v, %v", fi, err)
	}
	if ents, _ := os.ReadDir(base); len(ents) != 2 {
		t.Errorf("%d entries beside the data dirs, want none (no staging folder left)", len(ents)-2)
	}

	// Once moved, never again, even if the old folder gains such files.
	mustWrite(t, filepath.Join(old, TokenFile), "new token")
	if moved, err := MoveOldDefault(old, def, p.move); moved != nil || err != nil {
		t.Errorf("second move = %v, %v", moved, err)
	}
	mustHave(t, filepath.Join(old, TokenFile), "new token")
}

// TestDataDirMoveNotOurs: a fusou-app folder without our CA or token is the app's alone.
func TestDataDirMoveNotOurs(t *testing.T) {
	base := t.TempDir()
	old, def := filepath.Join(base, OldDefaultName), filepath.Join(base, DefaultName)
	mustWrite(t, filepath.Join(old, CADir, "other.pem"), "the app's")
	mustWrite(t, filepath.Join(old, IndexFile), "{}")
	var p fakePending
	if moved, err := MoveOldDefault(old, def, p.move); moved != nil || err != nil || p.from != "" {
		t.Errorf("MoveOldDefault = %v, %v (pending from %q); want nothing done", moved, err, p.from)
	}
	if _, err := os.Stat(def); !os.IsNotExist(err) {
		t.Errorf("made %s: %v", def, err)
	}
}

// TestDataDirMoveInterrupted: a move stopped part-way (some files in the staging folder) is
// finished by the next call; a pending folder in use stops it with nothing half-done.
func TestDataDirMoveInterrupted(t *testing.T) {
	base := t.TempDir()
	old, def := filepath.Join(base, OldDefaultName), filepath.Join(base, DefaultName)
	staging := filepath.Join(base, "."+DefaultName+".moving")
	mustWrite(t, filepath.Join(staging, CADir, caMarker), "cert") // moved before the stop
	mustWrite(t, filepath.Join(old, TokenFile), "token")

	busy := errors.New("in use")
	locked := func(from, to string) (int, error) { return 0, busy }
	if _, err := MoveOldDefault(old, def, locked); !errors.Is(err, busy) {
		t.Fatalf("MoveOldDefault with the pending folder in use = %v", err)
	}
	mustHave(t, filepath.Join(old, TokenFile), "token")
	if _, err := os.Stat(def); !os.IsNotExist(err) {
		t.Errorf("made %s: %v", def, err)
	}

	var p fakePending
	if _, err := MoveOldDefault(old, def, p.move); err != nil {
		t.Fatal(err)
	}
	mustHave(t, filepath.Join(def, CADir, caMarker), "cert")
	mustHave(t, filepath.Join(def, TokenFile), "token")
}

// TestDataDirDefault: the data directory is fusou-proxy in the user's config dir.
func TestDataDirDefault(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	t.Setenv("AppData", filepath.Join(home, "AppData"))
	base, err := os.UserConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(base) || !isUnder(base, home) {
		t.Fatalf("os.UserConfigDir() = %s, not under the test home", base)
	}
	def, err := Default()
	if err != nil || def != filepath.Join(base, "fusou-proxy") {
		t.Errorf("Default() = %s, %v", def, err)
	}
	old, err := OldDefault()
	if err != nil || old != filepath.Join(base, "fusou-app") {
		t.Errorf("OldDefault() = %s, %v", old, err)
	}
}

func isUnder(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !filepath.IsAbs(rel) && (len(rel) < 3 || rel[:3] != ".."+string(filepath.Separator))
}
