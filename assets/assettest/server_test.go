package assettest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

var pngBytes = []byte("\x89PNG fake image bytes")

// validBody is a stage-1 body for pngBytes, as SPEC §5 describes it.
func validBody() map[string]any {
	return map[string]any{
		"key":           "assets/kcs2/img/title/01.png",
		"relative_path": "kcs2/img/title/01.png",
		"file_size":     "21",
		"file_name":     "01.png",
		"content_hash":  sha(pngBytes),
		"content_type":  "image/png",
	}
}

// post sends a request and returns its status and body; hdr may be nil.
func post(t *testing.T, c *http.Client, method, url string, body io.Reader, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+AccessToken)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func jsonBody(t *testing.T, v any) io.Reader {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}

type handshakeAnswer struct {
	UploadURL string `json:"uploadUrl"`
	Token     string `json:"token"`
	ExpiresAt string `json:"expiresAt"`
	Fields    struct {
		Key          string `json:"key"`
		DeclaredSize int64  `json:"declared_size"`
	} `json:"fields"`
}

// handshake runs stage 1 for validBody and fails the test unless it is 200.
func handshake(t *testing.T, s *Server) handshakeAnswer {
	t.Helper()
	code, b := post(t, s.Client(), "POST", s.UploadEndpoint, jsonBody(t, validBody()), nil)
	if code != http.StatusOK {
		t.Fatalf("handshake: %d %s", code, b)
	}
	var a handshakeAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestHandshakeValidation(t *testing.T) {
	with := func(k string, v any) map[string]any {
		b := validBody()
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
		return b
	}
	tests := []struct {
		name string
		body any
		hdr  map[string]string
		want int
	}{
		{"valid", validBody(), nil, 200},
		{"no bearer", validBody(), map[string]string{"Authorization": ""}, 401},
		{"basic auth", validBody(), map[string]string{"Authorization": "Basic eDp5"}, 401},
		{"unknown bearer", validBody(), map[string]string{"Authorization": "Bearer nope"}, 401},
		{"lower-case scheme", validBody(), map[string]string{"Authorization": "bearer " + AccessToken}, 200},
		{"not JSON", "key=1", nil, 400},
		{"JSON array", []int{1}, nil, 400},
		{"no key", with("key", nil), nil, 400},
		{"key with ..", with("key", "assets/../x.png"), nil, 400},
		{"key only slashes", with("key", "///"), nil, 400},
		{"leading slash dropped", with("key", "/assets/kcs2/a.png"), nil, 200},
		{"no relative_path", with("relative_path", nil), nil, 400},
		{"file_size number", with("file_size", 21), nil, 400},
		{"file_size zero", with("file_size", "0"), nil, 400},
		{"file_size negative", with("file_size", "-1"), nil, 400},
		{"file_size exponent", with("file_size", "1e3"), nil, 400},
		{"file_size at limit", with("file_size", "209715200"), nil, 200},
		{"file_size over limit", with("file_size", "209715201"), nil, 400},
		{"no content_hash", with("content_hash", nil), nil, 400},
		{"upper-case hash", with("content_hash", strings.ToUpper(sha(pngBytes))), nil, 400},
		{"short hash", with("content_hash", "abc"), nil, 400},
		{"no content_type", with("content_type", nil), nil, 400},
		{"mp3 file_name", with("file_name", "a.mp3"), nil, 415},
		{"mp4 everywhere", map[string]any{"key": "assets/a.mp4", "relative_path": "a.mp4", "file_size": "1", "file_name": "a.mp4", "content_hash": sha(nil), "content_type": "video/mp4"}, nil, 415},
		{"no file_name", with("file_name", nil), nil, 415},
		{"key without extension", with("key", "assets/kcs2/img"), nil, 415},
		{"JSON upper-case ext", with("file_name", "01.PNG"), nil, 200},
	}
	s := NewServer()
	defer s.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if str, ok := tt.body.(string); ok {
				body = strings.NewReader(str)
			} else {
				body = jsonBody(t, tt.body)
			}
			code, b := post(t, s.Client(), "POST", s.UploadEndpoint, body, tt.hdr)
			if code != tt.want {
				t.Fatalf("status %d, want %d (%s)", code, tt.want, b)
			}
			if code != 200 {
				var doc map[string]string
				if err := json.Unmarshal(b, &doc); err != nil || doc["error"] == "" {
					t.Errorf("error body %q is not {\"error\":...}", b)
				}
			}
		})
	}
	if got, want := s.Requests(Handshake), len(tests); got != want {
		t.Errorf("Requests(Handshake) = %d, want %d", got, want)
	}
	if s.Requests(Upload) != 0 || s.Uploads() != 0 {
		t.Errorf("stage-1 requests counted as uploads")
	}
}

func TestHandshakeAnswer(t *testing.T) {
	s := NewServer()
	defer s.Close()
	before := time.Now()
	a := handshake(t, s)
	if a.UploadURL != s.UploadEndpoint {
		t.Errorf("uploadUrl = %q, want the absolute %q", a.UploadURL, s.UploadEndpoint)
	}
	if a.Token == "" || a.Fields.Key != "assets/kcs2/img/title/01.png" || a.Fields.DeclaredSize != 21 {
		t.Errorf("answer = %+v", a)
	}
	exp, err := time.Parse(time.RFC3339Nano, a.ExpiresAt)
	if err != nil {
		t.Fatal(err)
	}
	// A 21-byte asset gets the real server's ceil(30 s × 21 B / 1 MiB) + 300 s.
	if d := exp.Sub(before); d < 300*time.Second || d > 302*time.Second {
		t.Errorf("token lifetime %s, want ~301s", d)
	}

	s.SetRelativeUploadURL(true)
	if a := handshake(t, s); a.UploadURL != UploadPath {
		t.Errorf("relative uploadUrl = %q, want %q", a.UploadURL, UploadPath)
	}
}

func TestRealTokenTTL(t *testing.T) {
	for _, tt := range []struct {
		size int64
		want time.Duration
	}{
		{1, 301 * time.Second}, // ceil(1 B in MiB × 30) = 1
		{1 << 20, 330 * time.Second},
		{10 << 20, 600 * time.Second},
		{100 << 20, 3300 * time.Second},
		{200 << 20, time.Hour},
	} {
		if got := realTokenTTL(tt.size); got != tt.want {
			t.Errorf("realTokenTTL(%d) = %s, want %s", tt.size, got, tt.want)
		}
	}
}

// uploadReq sends stage 2 with token and body, letting mutate change the
// request first.
func uploadReq(t *testing.T, s *Server, token string, body []byte, mutate func(*http.Request)) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", s.UploadEndpoint, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+AccessToken)
	req.Header.Set("X-Upload-Token", token)
	req.Header.Set("Content-Type", "image/png")
	if mutate != nil {
		mutate(req)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestUploadStored(t *testing.T) {
	s := NewTLSServer()
	defer s.Close()
	s.KeepBytes(true)
	a := handshake(t, s)
	code, b := uploadReq(t, s, a.Token, pngBytes, nil)
	if code != 200 {
		t.Fatalf("upload: %d %s", code, b)
	}
	var ans struct {
		Key  string `json:"key"`
		Size int64  `json:"size"`
	}
	if err := json.Unmarshal(b, &ans); err != nil || ans.Key != "assets/kcs2/img/title/01.png" || ans.Size != 21 {
		t.Errorf("answer %s", b)
	}
	o, ok := s.Object(ans.Key)
	if !ok || o.ContentHash != sha(pngBytes) || o.Size != 21 || !bytes.Equal(o.Data, pngBytes) {
		t.Errorf("stored %+v", o)
	}
	if s.Uploads() != 1 || s.UploadCount(ans.Key, sha(pngBytes)) != 1 || s.Requests(Upload) != 1 {
		t.Errorf("counters: uploads %d, count %d, requests %d", s.Uploads(), s.UploadCount(ans.Key, sha(pngBytes)), s.Requests(Upload))
	}
	if got := s.LastHeader(Upload).Get("Content-Type"); got != "image/png" {
		t.Errorf("LastHeader(Upload) Content-Type = %q", got)
	}

	// Known now: both stages answer 409.
	code, _ = post(t, s.Client(), "POST", s.UploadEndpoint, jsonBody(t, validBody()), nil)
	if code != http.StatusConflict {
		t.Errorf("second handshake: %d, want 409", code)
	}
	if code, _ := uploadReq(t, s, a.Token, pngBytes, nil); code != http.StatusConflict {
		t.Errorf("second upload: %d, want 409", code)
	}
	// The same key with a new hash is a new version: accepted.
	nb := validBody()
	nb["content_hash"] = sha([]byte("other"))
	if code, b := post(t, s.Client(), "POST", s.UploadEndpoint, jsonBody(t, nb), nil); code != 200 {
		t.Errorf("new version handshake: %d %s", code, b)
	}
}

func TestUploadRejects(t *testing.T) {
	tests := []struct {
		name   string
		before func(s *Server) // runs after the handshake
		token  func(tok string) string
		body   []byte
		mutate func(*http.Request)
		want   int
	}{
		{name: "ok", want: 200},
		{name: "no bearer", mutate: func(r *http.Request) { r.Header.Del("Authorization") }, want: 401},
		{name: "revoked bearer", before: func(s *Server) { s.RevokeToken(AccessToken) }, want: 401},
		{name: "tampered token", token: func(tok string) string { return "x" + tok }, want: 401},
		{name: "token without signature", token: func(tok string) string { p, _, _ := strings.Cut(tok, "."); return p }, want: 401},
		{name: "tokens expired", before: func(s *Server) { s.ExpireUploadTokens() }, want: 401},
		{name: "token past its TTL", before: func(s *Server) { s.SetNow(func() time.Time { return time.Now().Add(303 * time.Second) }) }, want: 401},
		{name: "hash mismatch", body: []byte("\x89PNG fake image bytez"), want: 400},
		{name: "short body", body: []byte("short"), want: 400},
		{name: "chunked", mutate: func(r *http.Request) { r.ContentLength = -1; r.Body = io.NopCloser(bytes.NewReader(pngBytes)) }, want: 411},
		{name: "stored meanwhile", before: func(s *Server) { s.Seed("assets/kcs2/img/title/01.png", sha(pngBytes), 21) }, want: 409},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServer()
			defer s.Close()
			a := handshake(t, s)
			if tt.before != nil {
				tt.before(s)
			}
			tok := a.Token
			if tt.token != nil {
				tok = tt.token(tok)
			}
			body := pngBytes
			if tt.body != nil {
				body = tt.body
			}
			code, b := uploadReq(t, s, tok, body, tt.mutate)
			if code != tt.want {
				t.Fatalf("status %d, want %d (%s)", code, tt.want, b)
			}
			wantUploads := 0
			if tt.want == 200 {
				wantUploads = 1
			}
			if s.Uploads() != wantUploads {
				t.Errorf("Uploads() = %d, want %d", s.Uploads(), wantUploads)
			}
		})
	}
}

func TestUploadTokenTTLKnob(t *testing.T) {
	s := NewServer()
	defer s.Close()
	now := time.Now()
	s.SetNow(func() time.Time { return now })
	s.SetUploadTokenTTL(time.Second)
	a := handshake(t, s)
	later := now.Add(2 * time.Second)
	s.SetNow(func() time.Time { return later })
	if code, _ := uploadReq(t, s, a.Token, pngBytes, nil); code != 401 {
		t.Errorf("upload after TTL: %d, want 401", code)
	}
	s.SetUploadTokenTTL(0)
	a = handshake(t, s)
	if code, _ := uploadReq(t, s, a.Token, pngBytes, nil); code != 200 {
		t.Errorf("upload with default TTL: %d, want 200", code)
	}
}

func TestDatasetToken(t *testing.T) {
	s := NewServer()
	defer s.Close()
	s.SetDatasetTokens("ds-1")
	body := func(extra map[string]any) io.Reader {
		b := validBody()
		for k, v := range extra {
			b[k] = v
		}
		return jsonBody(t, b)
	}
	if code, _ := post(t, s.Client(), "POST", s.UploadEndpoint, body(nil), nil); code != 401 {
		t.Errorf("missing dataset token: %d, want 401", code)
	}
	if code, _ := post(t, s.Client(), "POST", s.UploadEndpoint, body(nil), map[string]string{"X-Dataset-Token": "ds-2"}); code != 401 {
		t.Errorf("unknown dataset token: %d, want 401", code)
	}
	if code, _ := post(t, s.Client(), "POST", s.UploadEndpoint, body(nil), map[string]string{"X-Dataset-Token": "ds-1"}); code != 200 {
		t.Errorf("header dataset token: %d, want 200", code)
	}
	if code, _ := post(t, s.Client(), "POST", s.UploadEndpoint, body(map[string]any{"dataset_token": "ds-1"}), nil); code != 200 {
		t.Errorf("body dataset token: %d, want 200", code)
	}
	if got := s.LastHeader(Handshake).Get("X-Dataset-Token"); got != "" {
		t.Errorf("last handshake header X-Dataset-Token = %q, want none", got)
	}
	s.SetDatasetTokens()
	if code, _ := post(t, s.Client(), "POST", s.UploadEndpoint, body(nil), nil); code != 200 {
		t.Errorf("check off: %d, want 200", code)
	}
}

type keysAnswer struct {
	Keys            []string  `json:"keys"`
	Items           []keyItem `json:"items"`
	Total           int       `json:"total"`
	Incremental     bool      `json:"incremental"`
	SnapshotUpperMs int64     `json:"snapshotUpperMs"`
	SnapshotUpperAt string    `json:"snapshotUpperAt"`
	RefreshedAt     string    `json:"refreshedAt"`
}

func getKeys(t *testing.T, s *Server, query string) keysAnswer {
	t.Helper()
	code, b := post(t, s.Client(), "GET", s.KeysEndpoint+query, nil, nil)
	if code != 200 {
		t.Fatalf("keys: %d %s", code, b)
	}
	var a keysAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestKeysSince(t *testing.T) {
	s := NewServer()
	defer s.Close()
	base := time.UnixMilli(1_764_633_600_000)
	now := base
	clock := func() time.Time { return now }
	s.SetNow(clock)
	s.Seed("assets/a.png", sha([]byte("a")), 1)
	s.Seed("assets/b.png", sha([]byte("b")), 2) // same ms: made 1 ms later

	full := getKeys(t, s, "")
	if full.Incremental || full.Total != 2 || len(full.Items) != 2 {
		t.Fatalf("full listing = %+v", full)
	}
	if full.Keys[0] != "assets/b.png" || full.Items[0].UploadedAt != base.UnixMilli()+1 {
		t.Errorf("not newest first: %+v", full.Items)
	}
	if full.SnapshotUpperMs != base.UnixMilli()+1 || full.SnapshotUpperAt != "2025-12-02T00:00:00.001Z" {
		t.Errorf("snapshot = %d %s", full.SnapshotUpperMs, full.SnapshotUpperAt)
	}
	if it := full.Items[1]; it.Key != "assets/a.png" || it.ContentHash != sha([]byte("a")) || it.Size != 1 {
		t.Errorf("item = %+v", it)
	}

	// Nothing new since the snapshot, even at the same clock reading.
	if inc := getKeys(t, s, "?since="+itoa(full.SnapshotUpperMs)); !inc.Incremental || inc.Total != 0 {
		t.Errorf("incremental right after = %+v", inc)
	}
	// An object stored in the snapshot's millisecond still lands above it.
	s.Seed("assets/c.png", sha([]byte("c")), 3)
	inc := getKeys(t, s, "?since="+itoa(full.SnapshotUpperMs))
	if got, want := s.LastRequestURI(Keys), KeysPath+"?since="+itoa(full.SnapshotUpperMs); got != want {
		t.Errorf("LastRequestURI = %q, want %q", got, want)
	}
	if inc.Total != 1 || inc.Keys[0] != "assets/c.png" {
		t.Errorf("incremental = %+v", inc)
	}
	for _, q := range []string{"?since=0", "?since=-5", "?since=abc"} {
		if a := getKeys(t, s, q); a.Incremental || a.Total != 3 {
			t.Errorf("%s: %+v, want a full listing", q, a)
		}
	}

	if code, _ := post(t, s.Client(), "GET", s.KeysEndpoint, nil, map[string]string{"Authorization": ""}); code != 401 {
		t.Errorf("keys without bearer: %d, want 401", code)
	}
	if code, _ := post(t, s.Client(), "POST", s.KeysEndpoint, nil, nil); code != 405 {
		t.Errorf("POST keys: %d, want 405", code)
	}
	if s.Requests(Keys) != 7 {
		t.Errorf("Requests(Keys) = %d, want 7", s.Requests(Keys))
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestFaults(t *testing.T) {
	tests := []struct {
		name      string
		route     Route
		fault     Fault
		wantCode  int
		wantRA    string
		wantBody  string
		wantErr   bool // the client sees a transport error
		bodyError bool // the client sees an error reading the body
	}{
		{name: "503 with Retry-After", route: Handshake, fault: Fault{Status: 503, RetryAfter: "120"}, wantCode: 503, wantRA: "120"},
		{name: "429 with body", route: Keys, fault: Fault{Status: 429, Body: "slow down"}, wantCode: 429, wantBody: "slow down"},
		{name: "upload 500", route: Upload, fault: Fault{Status: 500}, wantCode: 500},
		{name: "delay then normal", route: Handshake, fault: Fault{Delay: 20 * time.Millisecond}, wantCode: 200},
		{name: "reset", route: Handshake, fault: Fault{Reset: true}, wantErr: true},
		{name: "reset mid-upload", route: Upload, fault: Fault{Reset: true, ReadBody: 5}, wantErr: true},
		{name: "close mid-body", route: Keys, fault: Fault{CloseMidBody: true}, wantCode: 200, bodyError: true},
	}
	for _, tt := range tests {
		for _, tlsOn := range []bool{false, true} {
			name := tt.name
			if tlsOn {
				name += "/tls"
			}
			t.Run(name, func(t *testing.T) {
				s := NewServer()
				if tlsOn {
					s.Close()
					s = NewTLSServer()
				}
				defer s.Close()
				var req *http.Request
				switch tt.route {
				case Handshake:
					req, _ = http.NewRequest("POST", s.UploadEndpoint, jsonBody(t, validBody()))
				case Upload:
					a := handshake(t, s)
					req, _ = http.NewRequest("POST", s.UploadEndpoint, bytes.NewReader(pngBytes))
					req.Header.Set("X-Upload-Token", a.Token)
				case Keys:
					req, _ = http.NewRequest("GET", s.KeysEndpoint, nil)
				}
				req.Header.Set("Authorization", "Bearer "+AccessToken)
				s.AddFaults(tt.route, tt.fault)
				resp, err := s.Client().Do(req)
				if tt.wantErr {
					if err == nil {
						resp.Body.Close()
						t.Fatalf("got %d, want a transport error", resp.StatusCode)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, rerr := io.ReadAll(resp.Body)
				if tt.bodyError != (rerr != nil) {
					t.Errorf("body read error %v, want error %v", rerr, tt.bodyError)
				}
				if resp.StatusCode != tt.wantCode {
					t.Errorf("status %d, want %d", resp.StatusCode, tt.wantCode)
				}
				if got := resp.Header.Get("Retry-After"); got != tt.wantRA {
					t.Errorf("Retry-After %q, want %q", got, tt.wantRA)
				}
				if tt.wantBody != "" && string(b) != tt.wantBody {
					t.Errorf("body %q, want %q", b, tt.wantBody)
				}
			})
		}
	}
}

func TestFaultQueueAndFunc(t *testing.T) {
	s := NewServer()
	defer s.Close()
	s.AddFaults(Keys, Fault{Status: 502}, Fault{Status: 503})
	s.SetFaultFunc(Keys, func(r *http.Request, n int) *Fault {
		if n%2 == 1 {
			return &Fault{Status: 500}
		}
		return nil
	})
	var got []int
	for range 5 {
		code, _ := post(t, s.Client(), "GET", s.KeysEndpoint, nil, nil)
		got = append(got, code)
	}
	want := []int{502, 503, 500, 200, 500}
	if !equalInts(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	s.ClearFaults()
	if code, _ := post(t, s.Client(), "GET", s.KeysEndpoint, nil, nil); code != 200 {
		t.Errorf("after ClearFaults: %d", code)
	}
	if s.Requests(Keys) != 6 || s.TotalRequests() != 6 {
		t.Errorf("Requests = %d, total %d", s.Requests(Keys), s.TotalRequests())
	}
	s.ResetCounters()
	if s.TotalRequests() != 0 || s.LastHeader(Keys) != nil {
		t.Errorf("ResetCounters left counts")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFaultDelayHonoursContext proves a long Delay ends when the client
// gives up, so a test's timeout case finishes fast and Close does not wait.
func TestFaultDelayHonoursContext(t *testing.T) {
	s := NewServer()
	defer s.Close()
	s.AddFaults(Handshake, Fault{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.UploadEndpoint, jsonBody(t, validBody()))
	req.Header.Set("Authorization", "Bearer "+AccessToken)
	start := time.Now()
	_, err := s.Client().Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	s.Close() // returns only once the delayed handler has ended
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("delay not cut short: %s", d)
	}
}

func TestUnknownPath(t *testing.T) {
	s := NewServer()
	defer s.Close()
	if code, _ := post(t, s.Client(), "GET", s.URL+"/api/asset-sync/other", nil, nil); code != 404 {
		t.Errorf("status %d, want 404", code)
	}
	if code, _ := post(t, s.Client(), "GET", s.UploadEndpoint, nil, nil); code != 405 {
		t.Errorf("GET upload: %d, want 405", code)
	}
	if s.TotalRequests() != 0 {
		t.Errorf("unknown routes counted")
	}
}

// TestFaultDelayEndsOnClose: with a body too large to read ahead, the
// request's context cannot tell that the client left, but Close still ends
// the delay instead of waiting it out.
func TestFaultDelayEndsOnClose(t *testing.T) {
	s := NewServer()
	s.AddFaults(Upload, Fault{Delay: time.Hour})
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", s.UploadEndpoint, bytes.NewReader(make([]byte, 2*maxBufferedBody)))
		req.Header.Set("Authorization", "Bearer "+AccessToken)
		req.Header.Set("X-Upload-Token", "t")
		resp, err := s.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for s.Requests(Upload) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the server, not synchronising
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Close took %s", d)
	}
	if err := <-done; err == nil {
		t.Errorf("the delayed request got an answer")
	}
}
