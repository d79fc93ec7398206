package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runCLI runs the binary for the user home and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, home string, args ...string) (int, string, string) {
	t.Helper()
	cmd := command(t, home, nil, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	var exit *exec.ExitError
	if err := cmd.Run(); err != nil && !errors.As(err, &exit) {
		t.Fatalf("fusou-proxy %s did not run: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// writeAppEntry writes an entry in the FUSOU app's format into dir and returns its id; context
// is the JSON of the context string, or "null".
func writeAppEntry(t *testing.T, dir string, n int, data []byte, context string) string {
	t.Helper()
	id := fmt.Sprintf("%08d-0000-4000-8000-000000000000", n)
	sum := sha256.Sum256(data)
	meta := fmt.Sprintf(`{
  "id": %q,
  "target_url": "https://fusou.dev/api/asset-sync/upload",
  "headers": {"content-hash": %q},
  "created_at": 1764633600,
  "attempt_count": 0,
  "last_attempt_at": null,
  "file_path": %q,
  "context": %s
}`, id, hex.EncodeToString(sum[:]), filepath.Join(dir, id+".bin"), context)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{id + ".json": []byte(meta), id + ".bin": data} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// assetContext is the JSON string of an Asset context for key holding data.
func assetContextJSON(key string, data []byte) string {
	c := fmt.Sprintf(`{"Asset":{"relative_path":%q,"key":%q,"file_size":%d,"dataset_id":null,"content_type":"image/png"}}`,
		strings.TrimPrefix(key, "assets/"), key, len(data))
	return fmt.Sprintf("%q", c)
}

// ageTree sets every file under dir to a minute old, so that the folder looks quiet.
func ageTree(t *testing.T, dir string) {
	t.Helper()
	old := time.Now().Add(-time.Minute)
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPendingImport imports the FUSOU app's folders found under fusou-app/, runs again, is
// refused on a folder just written to, and moves with --move.
func TestPendingImport(t *testing.T) {
	home := t.TempDir()
	app := filepath.Join(configDir(t, home), "fusou-app")
	top, nested := filepath.Join(app, "pending_uploads"), filepath.Join(app, "asset_sync", "pending")
	for i := range 3 {
		data := []byte(fmt.Sprintf("asset %d", i))
		writeAppEntry(t, top, i, data, assetContextJSON(fmt.Sprintf("assets/kcs2/img/%d.png", i), data))
	}
	known := []byte("already on the server")
	writeAppEntry(t, nested, 10, known, assetContextJSON("assets/kcs2/img/known.png", known))
	writeAppEntry(t, nested, 11, []byte("snapshot"), `"{\"Snapshot\":{\"is_snapshot\":true}}"`)
	broken := writeAppEntry(t, nested, 12, []byte("broken"), assetContextJSON("assets/kcs2/img/b.png", []byte("broken")))
	os.WriteFile(filepath.Join(nested, broken+".bin"), []byte("BROKEN"), 0o600)
	ageTree(t, app)
	data := filepath.Join(configDir(t, home), "fusou-proxy")
	os.MkdirAll(data, 0o700)
	sum := sha256.Sum256(known)
	index := fmt.Sprintf(`{"version":1,"since":0,"items":[{"key":"assets/kcs2/img/known.png","content_hash":%q,"size":%d}]}`,
		hex.EncodeToString(sum[:]), len(known))
	os.WriteFile(filepath.Join(data, "asset_index.json"), []byte(index), 0o600)

	code, out, errOut := runCLI(t, home, "pending", "import")
	want := map[string]int{"imported": 3, "already pending": 0, "already uploaded": 1, "unsupported": 1, "corrupt": 1}
	if code != 0 || !summaryIs(out, want) {
		t.Fatalf("import: exit %d, want %v\nstdout:\n%s\nstderr:\n%s", code, want, out, errOut)
	}
	if !strings.Contains(errOut, "Skipped corrupt entry to import") || !strings.Contains(errOut, broken) {
		t.Errorf("the corrupt entry's reason is not logged:\n%s", errOut)
	}
	if _, list, _ := runCLI(t, home, "pending", "list"); !strings.Contains(list, "3 entries") {
		t.Errorf("pending list after the import:\n%s", list)
	}

	want = map[string]int{"imported": 0, "already pending": 3, "already uploaded": 1, "unsupported": 1, "corrupt": 1}
	if code, out, _ := runCLI(t, home, "pending", "import"); code != 0 || !summaryIs(out, want) {
		t.Errorf("second import: exit %d, want %v\n%s", code, want, out)
	}

	// A .json written just now: refused, exit 1, unless --force.
	writeAppEntry(t, top, 20, []byte("new"), assetContextJSON("assets/kcs2/img/new.png", []byte("new")))
	if code, _, errOut := runCLI(t, home, "pending", "import", top); code != 1 || !strings.Contains(errOut, "--force") {
		t.Errorf("import of a busy folder: exit %d, stderr %q; want 1 and a hint at --force", code, errOut)
	}
	code, out, _ = runCLI(t, home, "pending", "import", "--force", "--move", top)
	want = map[string]int{"imported": 1, "already pending": 3, "removed from the source": 4}
	if code != 0 || !summaryIs(out, want) {
		t.Errorf("import --force --move: exit %d, want %v\n%s", code, want, out)
	}
	if left, _ := os.ReadDir(top); len(left) != 0 {
		t.Errorf("%d files left after --move", len(left))
	}
	if ents, _ := os.ReadDir(nested); len(ents) != 6 {
		t.Errorf("the nested folder changed without --move: %d files", len(ents))
	}

	for _, args := range [][]string{{"pending", "import", "a", "b"}, {"pending", "import", "--bogus"}} {
		if code, _, _ := runCLI(t, home, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, _, _ := runCLI(t, home, "pending", "import", filepath.Join(home, "missing")); code != 1 {
		t.Errorf("import of a missing folder: exit %d, want 1", code)
	}
}

// summaryIs reports whether the import summary out has each label of want with its count.
func summaryIs(out string, want map[string]int) bool {
	got := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		for label := range want {
			if rest, ok := strings.CutPrefix(line, label+"  "); ok {
				var n int
				fmt.Sscan(rest, &n)
				got[label] = n
			}
		}
	}
	return maps.Equal(got, want)
}

// TestPendingListUnsupported: list and show mark an entry that is not an asset.
func TestPendingListUnsupported(t *testing.T) {
	home := t.TempDir()
	store := filepath.Join(home, "data", "pending_uploads")
	id := writeAppEntry(t, store, 1, []byte("custom"), `"{\"Custom\":{\"provider\":\"r2\"}}"`)
	_, list, errOut := runCLI(t, home, "pending", "list", "--data-dir", filepath.Join(home, "data"))
	if !strings.Contains(list, id) || !strings.Contains(list, "unsupported (Custom)") || !strings.Contains(list, "1 unsupported") {
		t.Errorf("pending list:\n%s\n%s", list, errOut)
	}
	_, show, _ := runCLI(t, home, "pending", "show", id, "--data-dir", filepath.Join(home, "data"))
	if !strings.Contains(show, `"unsupported": "Custom"`) {
		t.Errorf("pending show:\n%s", show)
	}
}

// TestDataDirMovedFromOldDefault: this program's files in fusou-app/ move once to fusou-proxy/,
// with one log line, and the FUSOU app's files stay.
func TestDataDirMovedFromOldDefault(t *testing.T) {
	home := t.TempDir()
	base := configDir(t, home)
	old, def := filepath.Join(base, "fusou-app"), filepath.Join(base, "fusou-proxy")
	if code, _, errOut := runCLI(t, home, "ca", "export", "--data-dir", old); code != 0 {
		t.Fatalf("ca export into the old folder: %s", errOut)
	}
	pem, _ := os.ReadFile(filepath.Join(old, "ca", "fusou-ca.pem"))
	os.WriteFile(filepath.Join(old, "control.token"), []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
	appEntry := writeAppEntry(t, filepath.Join(old, "pending_uploads"), 1, []byte("app"), assetContextJSON("assets/app.png", []byte("app")))
	os.MkdirAll(filepath.Join(old, "user"), 0o700)
	os.WriteFile(filepath.Join(old, "user", "configs.toml"), []byte("# the app's"), 0o600)

	code, _, errOut := runCLI(t, home, "pending", "list")
	if code != 0 || strings.Count(errOut, "Moved fusou-proxy's files to its own data directory") != 1 {
		t.Fatalf("first start: exit %d\n%s", code, errOut)
	}
	if got, _ := os.ReadFile(filepath.Join(def, "ca", "fusou-ca.pem")); !bytes.Equal(got, pem) || len(pem) == 0 {
		t.Errorf("the CA did not move intact")
	}
	for _, gone := range []string{"ca", "control.token"} {
		if _, err := os.Stat(filepath.Join(old, gone)); !os.IsNotExist(err) {
			t.Errorf("%s still in fusou-app: %v", gone, err)
		}
	}
	for _, kept := range []string{filepath.Join("user", "configs.toml"), filepath.Join("pending_uploads", appEntry+".json")} {
		if _, err := os.Stat(filepath.Join(old, kept)); err != nil {
			t.Errorf("the app's %s: %v", kept, err)
		}
	}
	if tok, _ := os.ReadFile(filepath.Join(def, "control.token")); !strings.HasPrefix(string(tok), "abab") {
		t.Errorf("control.token did not move")
	}
	if _, _, errOut := runCLI(t, home, "pending", "list"); strings.Contains(errOut, "Moved") {
		t.Errorf("moved again:\n%s", errOut)
	}
}

// TestDataDirNotMovedWhenSet: with --data-dir, fusou-app/ is left alone.
func TestDataDirNotMovedWhenSet(t *testing.T) {
	home := t.TempDir()
	old := filepath.Join(configDir(t, home), "fusou-app")
	os.MkdirAll(old, 0o700)
	os.WriteFile(filepath.Join(old, "control.token"), []byte(strings.Repeat("ab", 32)), 0o600)
	if code, _, errOut := runCLI(t, home, "pending", "list", "--data-dir", filepath.Join(home, "data")); code != 0 {
		t.Fatal(errOut)
	}
	if _, err := os.Stat(filepath.Join(old, "control.token")); err != nil {
		t.Errorf("moved although --data-dir was given: %v", err)
	}
	if _, err := os.Stat(filepath.Join(configDir(t, home), "fusou-proxy")); !os.IsNotExist(err) {
		t.Errorf("the default data dir was made: %v", err)
	}
}
