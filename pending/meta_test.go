package pending

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSpecExampleParses(t *testing.T) {
	data, err := os.ReadFile("testdata/spec_example.json")
	if err != nil {
		t.Fatal(err)
	}
	fm, err := decodeFUSOUMeta(data)
	if err != nil {
		t.Fatalf("FUSOU's reader refuses SPEC §6's example: %v", err)
	}
	if _, err := decodeFUSOUAsset(*fm.Context); err != nil {
		t.Fatalf("FUSOU's reader refuses the example's context: %v", err)
	}

	// The example's hash is a placeholder ("9f2c…"), which the store refuses; a real one passes.
	if _, err := decodeMeta(fm.ID, data); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("decodeMeta accepted the placeholder hash: %v", err)
	}
	hash := strings.Repeat("ab", 32)
	d, err := decodeMeta(fm.ID, bytes.Replace(data, []byte("9f2c…"), []byte(hash), 1))
	if err != nil {
		t.Fatalf("decodeMeta(SPEC example with a real hash): %v", err)
	}
	want := Context{RelativePath: "kcs2/img/title/01.png", Key: "assets/kcs2/img/title/01.png", FileSize: 12345,
		ContentHash: hash, ContentType: "image/png", FileName: "01.png"}
	if d.ctx != want || d.meta.CreatedAt != 1764633600 || d.meta.LastAttemptAt != 0 ||
		d.meta.LastError != "503 Service Unavailable" || !d.ours {
		t.Errorf("decoded %+v %+v", d.meta, d.ctx)
	}
}

// TestRoundTrip saves an entry with every field set, records an attempt, reopens the store and
// checks every field, then reads the file as the FUSOU app would.
func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	s := mustOpen(t, dir, Options{Now: clock.Now})
	data := []byte("\x89PNG round trip")
	c := assetContext("assets/kcs2/img/title/01.png", data)
	headers := map[string]string{"Origin": "https://fusou.dev", "Content-Type": "image/png"}
	saved, created, err := s.Save(c, "https://fusou.dev/api/asset-sync/upload", headers, bytes.NewReader(data))
	if err != nil || !created {
		t.Fatalf("Save: %v %v", created, err)
	}
	at := clock.Now().Add(time.Minute)
	notBefore := at.Add(time.Hour)
	updated, err := s.RecordAttempt(saved.ID, at, "503 Service Unavailable: busy", notBefore)
	if err != nil {
		t.Fatal(err)
	}
	wantHeaders := maps.Clone(headers)
	wantHeaders["content-hash"] = c.ContentHash
	want := Entry{
		Meta: Meta{
			ID:            saved.ID,
			TargetURL:     "https://fusou.dev/api/asset-sync/upload",
			Headers:       wantHeaders,
			CreatedAt:     clock.Now().Unix(),
			AttemptCount:  1,
			LastAttemptAt: at.Unix(),
			LastError:     "503 Service Unavailable: busy",
			FilePath:      filepath.Join(dir, saved.ID+".bin"),
			Context:       saved.Meta.Context,
		},
		Context:   c,
		NotBefore: notBefore,
	}
	if !entryEqual(updated, want) {
		t.Errorf("RecordAttempt =\n%+v\nwant\n%+v", updated, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := mustOpen(t, dir, Options{Now: clock.Now})
	got, err := s2.Get(saved.ID)
	if err != nil {
		t.Fatal(err)
	}
	want.NotBefore = time.Time{} // memory only
	if !entryEqual(got, want) {
		t.Errorf("after reopen =\n%+v\nwant\n%+v", got, want)
	}
	if n := s2.logs.FilterMessage("Rewrote pending metadata in the current format").Len(); n != 0 {
		t.Errorf("the store rewrote its own file at open")
	}
	if b := readEntry(t, s2.Store, saved.ID); !bytes.Equal(b, data) {
		t.Errorf("bytes = %q, want %q", b, data)
	}

	raw := mustRead(t, dir, saved.ID+".json")
	fm := mustDecodeFUSOU(t, raw)
	if fm.ID != saved.ID || fm.AttemptCount != 1 || fm.LastAttemptAt == nil || *fm.LastAttemptAt != uint64(at.Unix()) ||
		fm.CreatedAt != uint64(clock.Now().Unix()) || fm.FilePath != filepath.Join(dir, saved.ID+".bin") ||
		!maps.Equal(fm.Headers, wantHeaders) {
		t.Errorf("file as FUSOU reads it: %+v", fm)
	}
	fields, _ := strictObject(raw)
	wantNames := []string{"attempt_count", "context", "created_at", "file_path", "headers", "id",
		"last_attempt_at", "last_error", "target_url"}
	if names := slices.Sorted(maps.Keys(fields)); !slices.Equal(names, wantNames) {
		t.Errorf("JSON fields = %v, want %v", names, wantNames)
	}
}

// mustDecodeFUSOU reads a .json as the FUSOU app would and checks that its context is an Asset
// agreeing with the file's other fields.
func mustDecodeFUSOU(t *testing.T, raw []byte) fusouMeta {
	t.Helper()
	fm, err := decodeFUSOUMeta(raw)
	if err != nil {
		t.Fatalf("FUSOU's reader refuses the file: %v\n%s", err, raw)
	}
	if fm.Context == nil {
		t.Fatalf("context is null:\n%s", raw)
	}
	if _, err := decodeFUSOUAsset(*fm.Context); err != nil {
		t.Fatalf("FUSOU's reader refuses the context: %v\n%s", err, raw)
	}
	if !filepath.IsAbs(fm.FilePath) || filepath.Base(fm.FilePath) != fm.ID+".bin" {
		t.Errorf("file_path %q is not the absolute path of %s.bin", fm.FilePath, fm.ID)
	}
	return fm
}

// TestWrittenFormat checks a new entry's file field by field: SPEC §6's written format.
func TestWrittenFormat(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{Now: newClock().Now})
	data := []byte("written format")
	c := assetContext("assets/kcs2/img/title/01 é&<>.png", data)
	e, _, err := s.Save(c, "https://fusou.dev/api/asset-sync/upload?a=1&b=2", nil, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	raw := mustRead(t, dir, e.ID+".json")
	fm := mustDecodeFUSOU(t, raw)
	a, _ := decodeFUSOUAsset(*fm.Context)
	wantType := "image/png"
	wantAsset := fusouAsset{RelativePath: c.RelativePath, Key: c.Key, FileSize: uint64(len(data)), ContentType: &wantType}
	if a.RelativePath != wantAsset.RelativePath || a.Key != wantAsset.Key || a.FileSize != wantAsset.FileSize ||
		a.DatasetID != nil || a.ContentType == nil || *a.ContentType != wantType {
		t.Errorf("Asset = %+v, want %+v", a, wantAsset)
	}
	if fm.LastAttemptAt != nil || fm.AttemptCount != 0 || fm.CreatedAt != 1764633600 ||
		fm.TargetURL != "https://fusou.dev/api/asset-sync/upload?a=1&b=2" {
		t.Errorf("meta = %+v", fm)
	}
	if !maps.Equal(fm.Headers, map[string]string{"content-hash": c.ContentHash}) {
		t.Errorf("headers = %v", fm.Headers)
	}
	if !validID(fm.ID) || fm.ID[14] != '4' {
		t.Errorf("id %q is not a UUID v4", fm.ID)
	}
	fields, _ := strictObject(raw)
	if string(fields["last_attempt_at"]) != "null" {
		t.Errorf("last_attempt_at = %s, want null", fields["last_attempt_at"])
	}
}

func entryEqual(a, b Entry) bool {
	am, bm := a.Meta, b.Meta
	return am.ID == bm.ID && am.TargetURL == bm.TargetURL && maps.Equal(am.Headers, bm.Headers) &&
		am.CreatedAt == bm.CreatedAt && am.AttemptCount == bm.AttemptCount &&
		am.LastAttemptAt == bm.LastAttemptAt && am.LastError == bm.LastError &&
		am.FilePath == bm.FilePath && am.Context == bm.Context &&
		a.Context == b.Context && a.NotBefore.Equal(b.NotBefore) && a.Unsupported == b.Unsupported
}

// TestHeadersStripped: secret headers never reach the disk, whatever their case.
func TestHeadersStripped(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	data := []byte("secret test")
	headers := map[string]string{
		"Origin":              "https://fusou.dev",
		"authorization":       "Bearer SECRET-access",
		"COOKIE":              "session=SECRET-cookie",
		"Proxy-Authorization": "Basic SECRET-proxy",
		"x-upload-token":      "SECRET-upload",
		"X-Dataset-Token":     "SECRET-dataset",
		" Authorization":      "Bearer SECRET-spaced",
		"Content-Hash":        "not the hash",
	}
	c := assetContext("assets/a.png", data)
	e, _, err := s.Save(c, "https://fusou.dev/x", headers, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"Origin": "https://fusou.dev", "content-hash": c.ContentHash}; !maps.Equal(e.Headers, want) {
		t.Errorf("headers = %v, want %v", e.Headers, want)
	}
	if len(headers) != 8 {
		t.Errorf("Save changed the caller's map")
	}
	if raw := mustRead(t, dir, e.ID+".json"); bytes.Contains(raw, []byte("SECRET")) {
		t.Errorf(".json holds a secret:\n%s", raw)
	}
}

// TestOpenScrubsSecretHeaders: a .json written by something else with a secret header is
// rewritten without it at open.
func TestOpenScrubsSecretHeaders(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	e := mustSave(t, s.Store, "assets/a.png", []byte("x"))
	s.Close()
	m := e.Meta
	m.Headers = map[string]string{"Origin": "o", "Cookie": "SECRET", "content-hash": e.Context.ContentHash}
	writeJSON(t, dir, m)

	s2 := mustOpen(t, dir, Options{})
	got, _ := s2.Get(e.ID)
	if !maps.Equal(got.Headers, map[string]string{"Origin": "o", "content-hash": e.Context.ContentHash}) {
		t.Errorf("headers = %v", got.Headers)
	}
	if raw := mustRead(t, dir, e.ID+".json"); bytes.Contains(raw, []byte("SECRET")) {
		t.Errorf(".json still holds the secret:\n%s", raw)
	}
	if s2.logs.FilterMessage("Removed secret headers from pending upload").Len() != 1 {
		t.Errorf("scrub not logged")
	}
}

func writeJSON(t *testing.T, dir string, m Meta) {
	t.Helper()
	data, err := encodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, m.ID+".json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeMetaRejects(t *testing.T) {
	const id = "0b6f3c1e-7a52-4f0e-9c1d-2f8a4d5e6b7c"
	hash := strings.Repeat("0", 64)
	good := Meta{ID: id, FilePath: "/store/" + id + ".bin", Headers: map[string]string{"content-hash": hash},
		Context: mustContext(t, Context{Key: "assets/a", FileSize: 3})}
	tests := []struct {
		name   string
		change func(m *Meta)
		stem   string
		want   string // "" when the file must be accepted
	}{
		{"sound", func(m *Meta) {}, id, ""},
		{"relative path", func(m *Meta) { m.FilePath = id + ".bin" }, id, ""},
		{"dot slash path", func(m *Meta) { m.FilePath = "./" + id + ".bin" }, id, ""},
		{"windows path", func(m *Meta) { m.FilePath = `C:\Users\u\AppData\Roaming\fusou-app\pending_uploads\` + id + ".bin" }, id, ""},
		{"relative backslash path", func(m *Meta) { m.FilePath = `pending_uploads\` + id + ".bin" }, id, ""},
		{"parent path", func(m *Meta) { m.FilePath = "../../etc/passwd" }, id, "file_path"},
		{"absolute other file", func(m *Meta) { m.FilePath = "/etc/passwd" }, id, "file_path"},
		{"other id's bin", func(m *Meta) { m.FilePath = strings.Replace(id, "0b", "1b", 1) + ".bin" }, id, "file_path"},
		{"prefixed name", func(m *Meta) { m.FilePath = "/store/x" + id + ".bin" }, id, "file_path"},
		{"empty path", func(m *Meta) { m.FilePath = "" }, id, "file_path"},
		{"id not uuid", func(m *Meta) { m.ID, m.FilePath = "not-a-uuid", "not-a-uuid.bin" }, "not-a-uuid", "not a UUID"},
		{"upper-case id", func(m *Meta) { m.ID = strings.ToUpper(id) }, strings.ToUpper(id), "not a UUID"},
		{"id differs from name", func(m *Meta) {}, strings.Replace(id, "0b", "1b", 1), "does not match"},
		{"negative created_at", func(m *Meta) { m.CreatedAt = -1 }, id, "created_at"},
		{"negative attempt_count", func(m *Meta) { m.AttemptCount = -1 }, id, "attempt_count"},
		{"bad context", func(m *Meta) { m.Context = "{" }, id, "context"},
		{"context a number", func(m *Meta) { m.Context = "5" }, id, "context"},
		{"context of no known shape", func(m *Meta) { m.Context = `{"Other":{}}` }, id, "neither"},
		{"context without key", func(m *Meta) { m.Context = `{"Asset":{"relative_path":"a.png","file_size":1}}` }, id, "no key"},
		{"size as string", func(m *Meta) { m.Context = `{"Asset":{"key":"k","file_size":"3"}}` }, id, "context"},
		{"negative size", func(m *Meta) { m.Context = `{"Asset":{"key":"k","file_size":-1}}` }, id, "negative"},
		{"bad hash header", func(m *Meta) { m.Headers = map[string]string{"content-hash": strings.Repeat("A", 64)} }, id, "SHA-256"},
		{"hash header and flat hash differ", func(m *Meta) {
			m.Context = `{"key":"k","file_size":3,"content_hash":"` + strings.Repeat("1", 64) + `"}`
		}, id, "differ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good
			tt.change(&m)
			data, _ := encodeMeta(m)
			_, err := decodeMeta(tt.stem, data)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("decodeMeta: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("decodeMeta = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "{", "null", "null x", `{"id": 5}`, `{"id":"` + id + `","created_at":1.5}`,
		strings.Repeat(" ", maxMetaBytes+1)} {
		if _, err := decodeMeta(id, []byte(bad)); err == nil {
			t.Errorf("decodeMeta(%.20q) succeeded", bad)
		}
	}
}

func mustContext(t *testing.T, c Context) string {
	t.Helper()
	s, err := encodeContext(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
