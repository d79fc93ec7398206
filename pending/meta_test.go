package pending

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// specMeta and specContext spell out SPEC §6's field names independently of Meta and Context,
// so that a renamed or added field fails the tests below.
type specMeta struct {
	ID            string            `json:"id"`
	TargetURL     string            `json:"target_url"`
	Headers       map[string]string `json:"headers"`
	CreatedAt     int64             `json:"created_at"`
	AttemptCount  int               `json:"attempt_count"`
	LastAttemptAt int64             `json:"last_attempt_at"`
	LastError     string            `json:"last_error"`
	FilePath      string            `json:"file_path"`
	Context       string            `json:"context"`
}

type specContext struct {
	RelativePath string `json:"relative_path"`
	Key          string `json:"key"`
	FileSize     int64  `json:"file_size"`
	ContentHash  string `json:"content_hash"`
	ContentType  string `json:"content_type"`
	FileName     string `json:"file_name"`
}

func strictDecode(t *testing.T, data []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("strict decode of %s: %v", data, err)
	}
}

func TestSpecExampleParses(t *testing.T) {
	data, err := os.ReadFile("testdata/spec_example.json")
	if err != nil {
		t.Fatal(err)
	}
	var m Meta
	strictDecode(t, data, &m)
	var c Context
	strictDecode(t, []byte(m.Context), &c)
	if m.ID != "0b6f3c1e-7a52-4f0e-9c1d-2f8a4d5e6b7c" || m.CreatedAt != 1764633600 ||
		m.FilePath != m.ID+".bin" || m.Headers["Origin"] != "https://fusou.dev" {
		t.Errorf("meta = %+v", m)
	}
	if c.Key != "assets/kcs2/img/title/01.png" || c.FileSize != 12345 || c.FileName != "01.png" ||
		c.RelativePath != "kcs2/img/title/01.png" || c.ContentType != "image/png" {
		t.Errorf("context = %+v", c)
	}

	// The example's hash is a placeholder ("…"); with a real one decodeMeta accepts it.
	fixed := strings.Replace(string(data), `\"…\"`, `\"`+strings.Repeat("ab", 32)+`\"`, 1)
	if _, _, err := decodeMeta(m.ID, []byte(fixed)); err != nil {
		t.Errorf("decodeMeta(SPEC example with a real hash): %v", err)
	}
	if _, _, err := decodeMeta(m.ID, data); err == nil {
		t.Errorf("decodeMeta accepted the placeholder hash")
	}
}

// TestRoundTrip saves an entry with every field set, records an attempt, reopens the store and
// checks every field, and checks the files against SPEC §6's names with a strict decoder.
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
	want := Entry{
		Meta: Meta{
			ID:            saved.ID,
			TargetURL:     "https://fusou.dev/api/asset-sync/upload",
			Headers:       headers,
			CreatedAt:     clock.Now().Unix(),
			AttemptCount:  1,
			LastAttemptAt: at.Unix(),
			LastError:     "503 Service Unavailable: busy",
			FilePath:      saved.ID + ".bin",
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
	if got.Created() != clock.Now() || got.LastAttempt() != at.Truncate(time.Second) {
		t.Errorf("Created/LastAttempt = %v, %v", got.Created(), got.LastAttempt())
	}
	if b := readEntry(t, s2.Store, saved.ID); !bytes.Equal(b, data) {
		t.Errorf("bytes = %q, want %q", b, data)
	}

	raw, err := os.ReadFile(filepath.Join(dir, saved.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	wantNames := []string{"attempt_count", "context", "created_at", "file_path", "headers", "id",
		"last_attempt_at", "last_error", "target_url"}
	if names := slices.Sorted(maps.Keys(fields)); !slices.Equal(names, wantNames) {
		t.Errorf("JSON fields = %v, want %v", names, wantNames)
	}
	var sm specMeta
	strictDecode(t, raw, &sm)
	var sc specContext
	strictDecode(t, []byte(sm.Context), &sc)
	if sm.ID != saved.ID || sm.AttemptCount != 1 || sm.LastAttemptAt != at.Unix() || sm.FilePath != saved.ID+".bin" {
		t.Errorf("file meta = %+v", sm)
	}
	if sc != specContext(c) {
		t.Errorf("file context = %+v, want %+v", sc, c)
	}
	if !strings.Contains(sm.Context, `"file_size":`+jsonNumber(len(data))) {
		t.Errorf("file_size is not a JSON number: %s", sm.Context)
	}
}

func jsonNumber(n int) string { b, _ := json.Marshal(n); return string(b) }

func entryEqual(a, b Entry) bool {
	am, bm := a.Meta, b.Meta
	return am.ID == bm.ID && am.TargetURL == bm.TargetURL && maps.Equal(am.Headers, bm.Headers) &&
		am.CreatedAt == bm.CreatedAt && am.AttemptCount == bm.AttemptCount &&
		am.LastAttemptAt == bm.LastAttemptAt && am.LastError == bm.LastError &&
		am.FilePath == bm.FilePath && am.Context == bm.Context &&
		a.Context == b.Context && a.NotBefore.Equal(b.NotBefore)
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
	}
	e, _, err := s.Save(assetContext("assets/a.png", data), "https://fusou.dev/x", headers, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"Origin": "https://fusou.dev"}; !maps.Equal(e.Headers, want) {
		t.Errorf("headers = %v, want %v", e.Headers, want)
	}
	if len(headers) != 7 {
		t.Errorf("Save changed the caller's map")
	}
	raw, err := os.ReadFile(filepath.Join(dir, e.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("SECRET")) {
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
	m.Headers = map[string]string{"Origin": "o", "Cookie": "SECRET"}
	writeJSON(t, dir, m)

	s2 := mustOpen(t, dir, Options{})
	got, _ := s2.Get(e.ID)
	if !maps.Equal(got.Headers, map[string]string{"Origin": "o"}) {
		t.Errorf("headers = %v", got.Headers)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, e.ID+".json"))
	if bytes.Contains(raw, []byte("SECRET")) {
		t.Errorf(".json still holds the secret:\n%s", raw)
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
	good := Meta{ID: id, FilePath: id + ".bin", Headers: map[string]string{},
		Context: mustContext(t, Context{Key: "assets/a", ContentHash: strings.Repeat("0", 64), FileSize: 3})}
	tests := []struct {
		name   string
		change func(m *Meta)
		stem   string
		want   string
	}{
		{"sound", func(m *Meta) {}, id, ""},
		{"dot slash path", func(m *Meta) { m.FilePath = "./" + id + ".bin" }, id, ""},
		{"parent path", func(m *Meta) { m.FilePath = "../../etc/passwd" }, id, "file_path"},
		{"absolute path", func(m *Meta) { m.FilePath = "/etc/passwd" }, id, "file_path"},
		{"absolute own name", func(m *Meta) { m.FilePath = "/" + id + ".bin" }, id, "file_path"},
		{"other id's bin", func(m *Meta) { m.FilePath = strings.Replace(id, "0b", "1b", 1) + ".bin" }, id, "file_path"},
		{"empty path", func(m *Meta) { m.FilePath = "" }, id, "file_path"},
		{"id not uuid", func(m *Meta) { m.ID = "not-a-uuid" }, "not-a-uuid", "not a UUID"},
		{"upper-case id", func(m *Meta) { m.ID = strings.ToUpper(id) }, strings.ToUpper(id), "not a UUID"},
		{"id differs from name", func(m *Meta) {}, strings.Replace(id, "0b", "1b", 1), "does not match"},
		{"bad context", func(m *Meta) { m.Context = "{" }, id, "context"},
		{"context without key", func(m *Meta) {
			m.Context = mustContext(t, Context{ContentHash: strings.Repeat("0", 64)})
		}, id, "no key"},
		{"bad hash", func(m *Meta) {
			m.Context = mustContext(t, Context{Key: "k", ContentHash: strings.Repeat("A", 64)})
		}, id, "content_hash"},
		{"negative size", func(m *Meta) {
			m.Context = mustContext(t, Context{Key: "k", ContentHash: strings.Repeat("0", 64), FileSize: -1})
		}, id, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good
			tt.change(&m)
			data, _ := encodeMeta(m)
			_, _, err := decodeMeta(tt.stem, data)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("decodeMeta: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("decodeMeta = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "{", "null x", `{"id": 5}`, strings.Repeat(" ", maxMetaBytes+1)} {
		if _, _, err := decodeMeta(id, []byte(bad)); err == nil {
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

// TestStoreOutputTakesFastPath: the files the store writes decode on fastDecodeMeta's fast path,
// or opening a large store would be several times slower.
func TestStoreOutputTakesFastPath(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	data := []byte("fast")
	c := assetContext("assets/kcs2/img/title/01 é&<>.png", data)
	e, _, err := s.Save(c, "https://fusou.dev/api/asset-sync/upload?a=1&b=2",
		map[string]string{"Origin": "https://fusou.dev", "Content-Type": "image/png"}, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordAttempt(e.ID, time.Now(), "503 Service Unavailable\n{\"error\": \"busy\", \"path\": \"/a\\b\"}\t", time.Time{}); err != nil {
		t.Fatal(err)
	}
	raw := mustRead(t, dir, e.ID+".json")
	m, c2, ok := fastDecodeMeta(raw)
	if !ok {
		t.Fatalf("fast path refused the store's own file:\n%s", raw)
	}
	if m.ID != e.ID || c2 != c || m.AttemptCount != 1 {
		t.Errorf("fast path decoded %+v %+v", m, c2)
	}
}
