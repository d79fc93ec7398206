package assettest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

var pngBytes = []byte("\x89PNG fake image bytes")

// t0 is the frozen clock of most tests, a whole second.
var t0 = time.Unix(1_764_633_600, 0) // 2025-12-02T00:00:00Z

// testClock is a clock tests move by hand (no sleeps).
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newFake starts a plain-HTTP fake with its clock frozen at t0 and signs a
// user in.
func newFake(t *testing.T) (*Server, Tokens, *testClock) {
	t.Helper()
	s := NewServer()
	t.Cleanup(s.Close)
	clk := &testClock{t: t0}
	s.SetNow(clk.now)
	return s, s.NewSession(), clk
}

// auth is the headers that carry tk's access and dataset tokens.
func auth(tk Tokens) map[string]string {
	return map[string]string{"Authorization": "Bearer " + tk.Access, "X-Dataset-Token": tk.Dataset}
}

// with copies hdr and sets the pairs kv on the copy; "" removes a header.
func with(hdr map[string]string, kv ...string) map[string]string {
	m := maps.Clone(hdr)
	if m == nil {
		m = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// call sends a request on loopback and returns its status and body. body is
// nil, a string or []byte (sent as is) or a value sent as JSON; a header
// of "" in hdr is left out.
func call(t *testing.T, s *Server, method, url string, body any, hdr map[string]string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := s.Client().Do(req)
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

// errCode returns the "code" of an {"error": string, "code"?} body,
// failing the test when the body is not one.
func errCode(t *testing.T, b []byte) string {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	if msg, _ := doc["error"].(string); msg == "" {
		t.Errorf("error body %q has no \"error\" string", b)
	}
	code, _ := doc["code"].(string)
	return code
}

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

// bodyWith is validBody with k set to v, or removed when v is nil.
func bodyWith(k string, v any) map[string]any {
	b := validBody()
	if v == nil {
		delete(b, k)
	} else {
		b[k] = v
	}
	return b
}

type handshakeAnswer struct {
	UploadURL string `json:"uploadUrl"`
	Token     string `json:"token"`
	ExpiresAt string `json:"expiresAt"`
	Fields    struct {
		Key          string `json:"key"`
		RelativePath string `json:"relative_path"`
		DeclaredSize int64  `json:"declared_size"`
		FileName     string `json:"file_name"`
	} `json:"fields"`
}

// handshake runs stage 1 for validBody and fails the test unless it is 200.
func handshake(t *testing.T, s *Server, tk Tokens) handshakeAnswer {
	t.Helper()
	return handshakeBody(t, s, tk, validBody())
}

// handshakeBody runs stage 1 for body and fails the test unless it is 200.
func handshakeBody(t *testing.T, s *Server, tk Tokens, body map[string]any) handshakeAnswer {
	t.Helper()
	code, b := call(t, s, "POST", s.UploadEndpoint, body, auth(tk))
	if code != http.StatusOK {
		t.Fatalf("handshake: %d %s", code, b)
	}
	var a handshakeAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// upload runs stage 2 with token and body, setting hdr over tk's headers.
func upload(t *testing.T, s *Server, tk Tokens, token string, body []byte, hdr map[string]string) (int, []byte) {
	t.Helper()
	h := with(auth(tk), "X-Upload-Token", token, "Content-Type", "image/png")
	maps.Copy(h, hdr)
	return call(t, s, "POST", s.UploadEndpoint, body, h)
}

// TestHandshakeBodyRules covers stage 1's checks of the body
// (assets.ts:74-131, upload.ts:114-120), each case named by its rule.
func TestHandshakeBodyRules(t *testing.T) {
	mp4 := map[string]any{"key": "assets/a.mp4", "relative_path": "a.mp4", "file_size": "1", "file_name": "a.mp4", "content_hash": sha(nil), "content_type": "video/mp4"}
	tests := []struct {
		name string
		body any
		want int
	}{
		{"valid body: 200", validBody(), 200},
		{"body not JSON: 400", "key=1", 400},
		{"body with trailing garbage: 400", `{"key":"a.png"} x`, 400},
		{"JSON array body has no fields: key 400", []int{1}, 400},
		{"JSON null body: 500 as the real validator throws", "null", 500},
		{"key missing: 400", bodyWith("key", nil), 400},
		{"key not a string: 400", bodyWith("key", 12), 400},
		{"key with ..: 400", bodyWith("key", "assets/../x.png"), 400},
		{"key of slashes only: 400", bodyWith("key", "///"), 400},
		{"key leading slash dropped: 200", bodyWith("key", "/assets/kcs2/a.png"), 200},
		{"key backslashes become slashes: 200", bodyWith("key", `assets\kcs2\a.png`), 200},
		{"relative_path missing: 400", bodyWith("relative_path", nil), 400},
		{"relative_path with ..: 400", bodyWith("relative_path", "kcs2/../../etc.png"), 400},
		{"file_size as JSON number: 400", bodyWith("file_size", 21), 400},
		{"file_size 0: 400", bodyWith("file_size", "0"), 400},
		{"file_size negative: 400", bodyWith("file_size", "-1"), 400},
		{"file_size at 200 MiB: 200", bodyWith("file_size", "209715200"), 200},
		{"file_size over 200 MiB: 400", bodyWith("file_size", "209715201"), 400},
		{"file_size exponent, stricter than the real server: 400", bodyWith("file_size", "1e3"), 400},
		{"content_hash missing: 400", bodyWith("content_hash", nil), 400},
		{"content_hash blank: 400", bodyWith("content_hash", "  "), 400},
		{"content_hash upper-case, stricter: 400", bodyWith("content_hash", strings.ToUpper(sha(pngBytes))), 400},
		{"content_hash not SHA-256, stricter: 400", bodyWith("content_hash", "abc"), 400},
		{"content_type missing, stricter: 400", bodyWith("content_type", nil), 400},
		{"file_name extension not allowed: 415", bodyWith("file_name", "a.mp3"), 415},
		{"key extension not allowed: 415", bodyWith("key", "assets/kcs2/bgm/a.mp3"), 415},
		{"relative_path extension not allowed: 415", bodyWith("relative_path", "kcs2/a.mp4"), 415},
		{"every name .mp4: 415", mp4, 415},
		{"file_name missing has no extension: 415", bodyWith("file_name", nil), 415},
		{"file_name without extension: 415", bodyWith("file_name", "README"), 415},
		{"file_name ending in a dot: 415", bodyWith("file_name", "a."), 415},
		{"key without extension: 415", bodyWith("key", "assets/kcs2/img"), 415},
		{"relative_path without extension: 415", bodyWith("relative_path", "kcs2/img"), 415},
		{"file_name upper-case extension: 200", bodyWith("file_name", "01.PNG"), 200},
		{"file_name last path segment counts: 200", bodyWith("file_name", `x.mp3\01.png`), 200},
	}
	s, tk, _ := newFake(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, b := call(t, s, "POST", s.UploadEndpoint, tt.body, auth(tk))
			if code != tt.want {
				t.Fatalf("status %d, want %d (%s)", code, tt.want, b)
			}
			if code == 500 {
				var doc map[string]any
				if json.Unmarshal(b, &doc) != nil || doc["error"] != true {
					t.Errorf("500 body %s, want Hono's {\"error\":true,...}", b)
				}
			} else if code != 200 && errCode(t, b) != "" {
				t.Errorf("body %s has a code", b)
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

// badAccessTokens are access tokens validateJWT refuses (utils.ts:460-489),
// or accepts (ok), minted at t0.
func badAccessTokens(t *testing.T, s *Server) []struct {
	name string
	tok  string
	ok   bool
} {
	t.Helper()
	other := otherKeyToken(t, s, s.kid)
	return []struct {
		name string
		tok  string
		ok   bool
	}{
		{"valid ES256 token: accepted", s.MintAccessToken(nil), true},
		{"wrong iss: refused", s.MintAccessToken(jwt.MapClaims{"iss": "https://evil.supabase.co/auth/v1"}), false},
		{"no iss: refused", s.MintAccessToken(jwt.MapClaims{"iss": nil}), false},
		{"wrong aud: refused", s.MintAccessToken(jwt.MapClaims{"aud": "anon"}), false},
		{"no aud: refused", s.MintAccessToken(jwt.MapClaims{"aud": nil}), false},
		{"aud array holding authenticated: accepted", s.MintAccessToken(jwt.MapClaims{"aud": []string{"x", "authenticated"}}), true},
		{"expired 31 s ago, beyond the 30 s leeway: refused", s.MintAccessToken(jwt.MapClaims{"exp": t0.Add(-31 * time.Second).Unix()}), false},
		{"expired 30 s ago, at the leeway: refused", s.MintAccessToken(jwt.MapClaims{"exp": t0.Add(-30 * time.Second).Unix()}), false},
		{"expired 29 s ago, within the leeway: accepted", s.MintAccessToken(jwt.MapClaims{"exp": t0.Add(-29 * time.Second).Unix()}), true},
		{"exp of 0: refused", s.MintAccessToken(jwt.MapClaims{"exp": 0}), false},
		{"exp a string: refused", s.MintAccessToken(jwt.MapClaims{"exp": "soon"}), false},
		{"no exp, not required by jose: accepted", s.MintAccessToken(jwt.MapClaims{"exp": nil}), true},
		{"nbf 31 s ahead: refused", s.MintAccessToken(jwt.MapClaims{"nbf": t0.Add(31 * time.Second).Unix()}), false},
		{"nbf 29 s ahead, within the leeway: accepted", s.MintAccessToken(jwt.MapClaims{"nbf": t0.Add(29 * time.Second).Unix()}), true},
		{"iat a string: refused", s.MintAccessToken(jwt.MapClaims{"iat": "now"}), false},
		{"iat in the future, unchecked by jose: accepted", s.MintAccessToken(jwt.MapClaims{"iat": t0.Add(time.Hour).Unix()}), true},
		{"HS256 signed with the public key (alg confusion): refused", algConfusionToken(t, s), false},
		{"HS256 signed with the dataset secret: refused", hs256Access(t, s, s.datasetSecret), false},
		{"alg none: refused", noneToken(t, s), false},
		{"signed by another key under the same kid: refused", other, false},
		{"signed by another key under another kid: refused", otherKeyToken(t, s, "other-kid"), false},
		{"no kid, signed by the JWKS key: accepted", noKidToken(t, s), true},
		{"not a JWT: refused", "not-a-jwt", false},
	}
}

// accessClaims is a valid access-token claim set of s at t0.
func accessClaims(s *Server) jwt.MapClaims {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accessClaimsLocked(&tokenFamily{user: "u", sessionID: "sid"}, t0)
}

func algConfusionToken(t *testing.T, s *Server) string {
	t.Helper()
	pub, err := s.signKey.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return hs256Access(t, s, pub)
}

func hs256Access(t *testing.T, s *Server, secret []byte) string {
	t.Helper()
	tk := jwt.NewWithClaims(jwt.SigningMethodHS256, accessClaims(s))
	tk.Header["kid"] = s.kid
	tok, err := tk.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func noneToken(t *testing.T, s *Server) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodNone, accessClaims(s)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func otherKeyToken(t *testing.T, s *Server, kid string) string {
	t.Helper()
	other := newServer() // a fresh P-256 key
	tk := jwt.NewWithClaims(jwt.SigningMethodES256, accessClaims(s))
	tk.Header["kid"] = kid
	tok, err := tk.SignedString(other.signKey)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func noKidToken(t *testing.T, s *Server) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, accessClaims(s)).SignedString(s.signKey)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestAccessTokenRules checks each access-token rule on all three routes,
// with each route's answer: 401 without a code at stage 1
// (upload.ts:109-112), AUTH_EXPIRED at stage 2 (upload.ts:275-287), 401
// without a code on keys (assets.ts:272-276).
func TestAccessTokenRules(t *testing.T) {
	s, tk, _ := newFake(t)
	a := handshake(t, s, tk)
	for _, tt := range badAccessTokens(t, s) {
		t.Run(tt.name, func(t *testing.T) {
			hdr := with(auth(tk), "Authorization", "Bearer "+tt.tok)
			type answer struct {
				route    string
				code     int
				body     []byte
				wantCode string
			}
			var routes []answer
			code, b := call(t, s, "POST", s.UploadEndpoint, bodyWith("key", "assets/kcs2/other.png"), hdr)
			routes = append(routes, answer{"handshake", code, b, ""})
			code, b = upload(t, s, tk, a.Token, pngBytes, map[string]string{"Authorization": "Bearer " + tt.tok})
			routes = append(routes, answer{"upload", code, b, "AUTH_EXPIRED"})
			code, b = call(t, s, "GET", s.KeysEndpoint, nil, hdr)
			routes = append(routes, answer{"keys", code, b, ""})
			for _, r := range routes {
				if tt.ok {
					if r.code != 200 {
						t.Errorf("%s: %d %s, want 200", r.route, r.code, r.body)
					}
					continue
				}
				if r.code != 401 {
					t.Errorf("%s: %d %s, want 401", r.route, r.code, r.body)
				} else if got := errCode(t, r.body); got != r.wantCode {
					t.Errorf("%s: code %q, want %q", r.route, got, r.wantCode)
				}
			}
		})
	}
}

// TestBearerScheme: the upload stages want "Bearer " exactly, else 401
// AUTH_MISSING (upload.ts:47-50, 102-108, 236-244); the keys route takes
// any case and white space (utils.ts:308-315), else 401 without a code.
func TestBearerScheme(t *testing.T) {
	s, tk, _ := newFake(t)
	a := handshake(t, s, tk)
	for _, tt := range []struct {
		name      string
		header    string
		uploadsOK bool
		keysOK    bool
	}{
		{"no header", "", false, false},
		{"Basic scheme", "Basic eDp5", false, false},
		{"Bearer without a token", "Bearer ", false, false},
		{"lower-case bearer", "bearer " + tk.Access, false, true},
		{"upper-case BEARER", "BEARER " + tk.Access, false, true},
		{"Bearer and extra spaces", "Bearer    " + tk.Access, true, true},
		{"Bearer", "Bearer " + tk.Access, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// An empty header value is left out by call, so an empty
			// Authorization is no header at all.
			hdr := with(auth(tk), "Authorization", tt.header)
			check := func(route string, code int, b []byte, ok bool, missingCode string) {
				t.Helper()
				switch {
				case ok && code != 200:
					t.Errorf("%s: %d %s, want 200", route, code, b)
				case !ok && code != 401:
					t.Errorf("%s: %d %s, want 401", route, code, b)
				case !ok && errCode(t, b) != missingCode:
					t.Errorf("%s: body %s, want code %q", route, b, missingCode)
				}
			}
			code, b := call(t, s, "POST", s.UploadEndpoint, bodyWith("key", "assets/kcs2/x.png"), hdr)
			check("handshake", code, b, tt.uploadsOK, "AUTH_MISSING")
			code, b = upload(t, s, tk, a.Token, pngBytes, map[string]string{"Authorization": tt.header})
			check("upload", code, b, tt.uploadsOK, "AUTH_MISSING")
			code, b = call(t, s, "GET", s.KeysEndpoint, nil, hdr)
			check("keys", code, b, tt.keysOK, "")
		})
	}
}

// TestDatasetTokenStage1 covers the dataset token at stage 1: always
// required (assets.ts:69), from the header or the body (utils.ts:642-649),
// verified with no leeway and its claims checked (utils.ts:590-670).
func TestDatasetTokenStage1(t *testing.T) {
	s, tk, _ := newFake(t)
	signed := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(m, overlay(datasetClaims("u", t0), c)).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, tt := range []struct {
		name   string
		header string
		body   any // the body's dataset_token; nil: none
		want   int
	}{
		{"in the header: 200", tk.Dataset, nil, 200},
		{"in the body: 200", "", tk.Dataset, 200},
		{"blank header, token in the body: 200", "   ", tk.Dataset, 200},
		{"header wins over a bad body token: 200", tk.Dataset, "junk", 200},
		{"missing: 401 dataset_token is required", "", nil, 401},
		{"body token not a string: 401", "", 12, 401},
		{"not a JWT: 401", "junk", nil, 401},
		{"expired now, no leeway: 401", s.MintDatasetToken(jwt.MapClaims{"exp": t0.Unix()}), nil, 401},
		{"expiring in 1 s: 200", s.MintDatasetToken(jwt.MapClaims{"exp": t0.Add(time.Second).Unix()}), nil, 200},
		{"no exp: 200", s.MintDatasetToken(jwt.MapClaims{"exp": nil}), nil, 200},
		{"wrong typ: 401", s.MintDatasetToken(jwt.MapClaims{"typ": "access"}), nil, 401},
		{"no typ: 401", s.MintDatasetToken(jwt.MapClaims{"typ": nil}), nil, 401},
		{"wrong aud: 401", s.MintDatasetToken(jwt.MapClaims{"aud": "authenticated"}), nil, 401},
		{"aud as an array: 401", s.MintDatasetToken(jwt.MapClaims{"aud": []string{"fusou-upload"}}), nil, 401},
		{"no aud: 401", s.MintDatasetToken(jwt.MapClaims{"aud": nil}), nil, 401},
		{"no sub: 401", s.MintDatasetToken(jwt.MapClaims{"sub": nil}), nil, 401},
		{"sub a number: 401", s.MintDatasetToken(jwt.MapClaims{"sub": 7}), nil, 401},
		{"no dataset_id: 401", s.MintDatasetToken(jwt.MapClaims{"dataset_id": nil}), nil, 401},
		{"dataset_id a number: 401", s.MintDatasetToken(jwt.MapClaims{"dataset_id": 7}), nil, 401},
		{"signed with another secret: 401", signed(jwt.SigningMethodHS256, []byte("another secret of 32 bytes......"), nil), nil, 401},
		{"HS512 with the right secret, as jose allows: 200", signed(jwt.SigningMethodHS512, s.datasetSecret, nil), nil, 200},
		{"ES256 signed: 401", signed(jwt.SigningMethodES256, s.signKey, nil), nil, 401},
		{"the access token as dataset token: 401", tk.Access, nil, 401},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := validBody()
			if tt.body != nil {
				body["dataset_token"] = tt.body
			}
			code, b := call(t, s, "POST", s.UploadEndpoint, body, with(auth(tk), "X-Dataset-Token", tt.header))
			if code != tt.want {
				t.Fatalf("status %d, want %d (%s)", code, tt.want, b)
			}
			if code == 401 {
				if errCode(t, b) != "" {
					t.Errorf("body %s has a code", b)
				}
				var doc struct{ Error string }
				json.Unmarshal(b, &doc)
				_, bodyStr := tt.body.(string)
				missing := strings.TrimSpace(tt.header) == "" && !bodyStr
				if missing != (doc.Error == "dataset_token is required") {
					t.Errorf("error %q for a token that is missing: %v", doc.Error, missing)
				}
			}
		})
	}
}

// TestDatasetTokenNotCheckedAtStage2: stage 2 never looks at the dataset
// token (upload.ts:225-322): missing, junk or expired since stage 1.
func TestDatasetTokenNotCheckedAtStage2(t *testing.T) {
	s, tk, clk := newFake(t)
	short := tk
	short.Dataset = s.MintDatasetToken(jwt.MapClaims{"exp": t0.Add(10 * time.Second).Unix()})
	for i, ds := range []string{"", "junk", short.Dataset} {
		a := handshakeBody(t, s, short, bodyWith("key", fmt.Sprintf("assets/kcs2/%d.png", i)))
		if ds == short.Dataset {
			clk.add(20 * time.Second) // the dataset token expires; the upload token (301 s) does not
			if code, _ := call(t, s, "POST", s.UploadEndpoint, bodyWith("key", "assets/kcs2/y.png"), auth(short)); code != 401 {
				t.Fatalf("stage 1 with the expired dataset token: %d, want 401", code)
			}
		}
		code, b := upload(t, s, tk, a.Token, pngBytes, map[string]string{"X-Dataset-Token": ds})
		if code != 200 {
			t.Errorf("stage 2 with dataset token %.10q: %d %s, want 200", ds, code, b)
		}
	}
}

// TestHandshakeAnswer checks the stage-1 answer (upload.ts:194-222): an
// absolute uploadUrl, an HS256 upload token holding the payload, user_id
// and exp, expiresAt and fields.
func TestHandshakeAnswer(t *testing.T) {
	s, tk, _ := newFake(t)
	a := handshake(t, s, tk)
	if a.UploadURL != s.UploadEndpoint {
		t.Errorf("uploadUrl = %q, want the absolute %q", a.UploadURL, s.UploadEndpoint)
	}
	if a.Fields.Key != "assets/kcs2/img/title/01.png" || a.Fields.RelativePath != "kcs2/img/title/01.png" ||
		a.Fields.DeclaredSize != 21 || a.Fields.FileName != "01.png" {
		t.Errorf("fields = %+v", a.Fields)
	}
	exp, err := time.Parse(time.RFC3339Nano, a.ExpiresAt)
	if err != nil {
		t.Fatal(err)
	}
	// A 21-byte asset gets ceil(30 s × 21 B / 1 MiB) + 300 s.
	if want := t0.Add(301 * time.Second); !exp.Equal(want) {
		t.Errorf("expiresAt %s, want %s", exp, want)
	}
	c := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(a.Token, c, func(*jwt.Token) (any, error) { return s.uploadSecret, nil },
		jwt.WithTimeFunc(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	dsClaims := jwt.MapClaims{}
	jwt.NewParser().ParseUnverified(tk.Dataset, dsClaims)
	if tok.Method.Alg() != "HS256" || c["key"] != a.Fields.Key || c["content_hash"] != sha(pngBytes) ||
		c["declared_size"] != 21.0 || c["user_id"] != dsClaims["sub"] || c["exp"] != float64(t0.Unix()+301) {
		t.Errorf("upload token %s %v", tok.Method.Alg(), c)
	}

	s.SetRelativeUploadURL(true)
	if a := handshake(t, s, tk); a.UploadURL != UploadPath {
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

// TestUploadRules covers stage 2 in the real server's order
// (upload.ts:225-322, assets.ts:170-255), each case named by its rule.
func TestUploadRules(t *testing.T) {
	tests := []struct {
		name     string
		before   func(s *Server, clk *testClock, tk Tokens) // runs after the handshake
		token    func(s *Server, tok string) string
		body     []byte
		hdr      map[string]string
		want     int
		wantCode string
	}{
		{name: "valid: 200", want: 200},
		{name: "no bearer: 401 AUTH_MISSING", hdr: map[string]string{"Authorization": "Token x"}, want: 401, wantCode: "AUTH_MISSING"},
		{name: "no bearer, bad upload token: AUTH_MISSING first", hdr: map[string]string{"Authorization": "Token x"},
			token: func(_ *Server, tok string) string { return "x" + tok }, want: 401, wantCode: "AUTH_MISSING"},
		{name: "bad upload token before a bad access token: 401 without code", hdr: map[string]string{"Authorization": "Bearer junk"},
			token: func(_ *Server, tok string) string { return "x" + tok }, want: 401},
		{name: "bad access token: 401 AUTH_EXPIRED", hdr: map[string]string{"Authorization": "Bearer junk"}, want: 401, wantCode: "AUTH_EXPIRED"},
		{name: "revoked access token: 401 AUTH_EXPIRED", before: func(s *Server, _ *testClock, tk Tokens) { s.RevokeToken(tk.Access) }, want: 401, wantCode: "AUTH_EXPIRED"},
		{name: "tampered upload token: 401", token: func(_ *Server, tok string) string { return tok[:len(tok)-2] + "xx" }, want: 401},
		{name: "upload token without signature: 401", token: func(_ *Server, tok string) string { return tok[:strings.LastIndex(tok, ".")+1] }, want: 401},
		{name: "upload token signed with another secret: 401", token: func(s *Server, _ string) string {
			tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"key": "assets/kcs2/img/title/01.png",
				"declared_size": 21, "content_hash": sha(pngBytes), "serial": 99}).SignedString([]byte("wrong"))
			return tok
		}, want: 401},
		{name: "upload token without content_hash: 400", token: func(s *Server, _ string) string {
			tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"key": "k.png", "declared_size": 21, "serial": 99}).SignedString(s.uploadSecret)
			return tok
		}, want: 400},
		{name: "upload token voided by ExpireUploadTokens: 401", before: func(s *Server, _ *testClock, _ Tokens) { s.ExpireUploadTokens() }, want: 401},
		{name: "upload token at its exp, no leeway: 401", before: func(_ *Server, clk *testClock, _ Tokens) { clk.add(301 * time.Second) }, want: 401},
		{name: "upload token 1 s before its exp: 200", before: func(_ *Server, clk *testClock, _ Tokens) { clk.add(300 * time.Second) }, want: 200},
		{name: "hash mismatch: 400", body: []byte("\x89PNG fake image bytez"), want: 400},
		{name: "body shorter than file_size, stricter: 400", body: []byte("short"), want: 400},
		{name: "stored meanwhile with this hash: 200, replaced", before: func(s *Server, _ *testClock, _ Tokens) { s.Seed("assets/kcs2/img/title/01.png", sha(pngBytes), 21) }, want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, tk, clk := newFake(t)
			a := handshake(t, s, tk)
			if tt.before != nil {
				tt.before(s, clk, tk)
			}
			tok := a.Token
			if tt.token != nil {
				tok = tt.token(s, tok)
			}
			body := pngBytes
			if tt.body != nil {
				body = tt.body
			}
			code, b := upload(t, s, tk, tok, body, tt.hdr)
			if code != tt.want {
				t.Fatalf("status %d, want %d (%s)", code, tt.want, b)
			}
			if code != 200 && errCode(t, b) != tt.wantCode {
				t.Errorf("body %s, want code %q", b, tt.wantCode)
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

// TestUploadChunked: the fake wants a Content-Length at stage 2 (411),
// stricter than the real server, as SPEC §5 has the client send one.
func TestUploadChunked(t *testing.T) {
	s, tk, _ := newFake(t)
	a := handshake(t, s, tk)
	req, _ := http.NewRequest("POST", s.UploadEndpoint, io.NopCloser(bytes.NewReader(pngBytes)))
	for k, v := range with(auth(tk), "X-Upload-Token", a.Token) {
		req.Header.Set(k, v)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusLengthRequired {
		t.Errorf("chunked upload: %d, want 411", resp.StatusCode)
	}
}

// TestConflictOnlyAtStage1: a 409 comes from stage 1 only
// (assets.ts:117-131); stage 2 replaces what is stored (INSERT OR REPLACE,
// assets.ts:208-235) and answers 200 {"key","size"}.
func TestConflictOnlyAtStage1(t *testing.T) {
	s, tk, clk := newFake(t)
	s.KeepBytes(true)
	a := handshake(t, s, tk)
	code, b := upload(t, s, tk, a.Token, pngBytes, nil)
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
	first, ok := s.Object(ans.Key)
	if !ok || first.ContentHash != sha(pngBytes) || first.Size != 21 || !bytes.Equal(first.Data, pngBytes) {
		t.Errorf("stored %+v", first)
	}
	if got := s.LastHeader(Upload).Get("Content-Type"); got != "image/png" {
		t.Errorf("LastHeader(Upload) Content-Type = %q", got)
	}

	if code, b := call(t, s, "POST", s.UploadEndpoint, validBody(), auth(tk)); code != http.StatusConflict || errCode(t, b) != "" {
		t.Errorf("second handshake: %d %s, want 409", code, b)
	}
	clk.add(time.Second)
	if code, b := upload(t, s, tk, a.Token, pngBytes, nil); code != 200 {
		t.Errorf("second upload with the first token: %d %s, want 200 (replace)", code, b)
	}
	if o, _ := s.Object(ans.Key); o.UploadedAt <= first.UploadedAt {
		t.Errorf("uploadedAt %d not after %d: not replaced", o.UploadedAt, first.UploadedAt)
	}
	if n := s.UploadCount(ans.Key, sha(pngBytes)); n != 2 {
		t.Errorf("UploadCount = %d, want 2", n)
	}
	// The same key with a new hash is a new version: accepted at stage 1.
	if code, b := call(t, s, "POST", s.UploadEndpoint, bodyWith("content_hash", sha([]byte("other"))), auth(tk)); code != 200 {
		t.Errorf("new version handshake: %d %s", code, b)
	}
}

func TestUploadTokenTTLKnob(t *testing.T) {
	s, tk, clk := newFake(t)
	s.SetUploadTokenTTL(time.Second)
	a := handshake(t, s, tk)
	clk.add(time.Second)
	if code, _ := upload(t, s, tk, a.Token, pngBytes, nil); code != 401 {
		t.Errorf("upload at the token's exp: %d, want 401", code)
	}
	s.SetUploadTokenTTL(0)
	a = handshake(t, s, tk)
	if code, _ := upload(t, s, tk, a.Token, pngBytes, nil); code != 200 {
		t.Errorf("upload with default TTL: %d, want 200", code)
	}
}

func TestUnknownRoutes(t *testing.T) {
	s, tk, _ := newFake(t)
	for _, tt := range []struct{ method, url string }{
		{"GET", s.URL + "/api/asset-sync/other"},
		{"GET", s.UploadEndpoint},
		{"POST", s.KeysEndpoint},
		{"GET", s.URL + TokenPath},
	} {
		code, b := call(t, s, tt.method, tt.url, nil, auth(tk))
		var doc map[string]any
		json.Unmarshal(b, &doc)
		// Hono's catch-all (app.ts:226-228): 404 with a boolean "error".
		if code != 404 || doc["error"] != true || doc["message"] != "Not found" {
			t.Errorf("%s %s: %d %s, want Hono's 404", tt.method, tt.url, code, b)
		}
	}
	if code, _ := call(t, s, "OPTIONS", s.UploadEndpoint, nil, nil); code != 204 {
		t.Errorf("OPTIONS: %d, want 204", code)
	}
	if s.TotalRequests() != 0 {
		t.Errorf("unknown routes counted")
	}
}

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
		{name: "refresh 502", route: Refresh, fault: Fault{Status: 502}, wantCode: 502},
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
				tk := s.NewSession()
				var req *http.Request
				switch tt.route {
				case Handshake:
					req, _ = http.NewRequest("POST", s.UploadEndpoint, bytes.NewReader(mustJSON(t, validBody())))
				case Upload:
					a := handshake(t, s, tk)
					req, _ = http.NewRequest("POST", s.UploadEndpoint, bytes.NewReader(pngBytes))
					req.Header.Set("X-Upload-Token", a.Token)
				case Keys:
					req, _ = http.NewRequest("GET", s.KeysEndpoint, nil)
				case Refresh:
					req, _ = http.NewRequest("POST", s.URL+TokenPath+"?grant_type=refresh_token", strings.NewReader(`{"refresh_token":"`+tk.Refresh+`"}`))
				}
				for k, v := range auth(tk) {
					req.Header.Set(k, v)
				}
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

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFaultQueueAndFunc(t *testing.T) {
	s, tk, _ := newFake(t)
	s.AddFaults(Keys, Fault{Status: 502}, Fault{Status: 503})
	s.SetFaultFunc(Keys, func(r *http.Request, n int) *Fault {
		if n%2 == 1 {
			return &Fault{Status: 500}
		}
		return nil
	})
	var got []int
	for range 5 {
		code, _ := call(t, s, "GET", s.KeysEndpoint, nil, auth(tk))
		got = append(got, code)
	}
	if want := []int{502, 503, 500, 200, 500}; !equalInts(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	s.ClearFaults()
	if code, _ := call(t, s, "GET", s.KeysEndpoint, nil, auth(tk)); code != 200 {
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
	tk := s.NewSession()
	s.AddFaults(Handshake, Fault{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.UploadEndpoint, bytes.NewReader(mustJSON(t, validBody())))
	req.Header.Set("Authorization", "Bearer "+tk.Access)
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

// TestFaultDelayEndsOnClose: with a body too large to read ahead, the
// request's context cannot tell that the client left, but Close still ends
// the delay instead of waiting it out.
func TestFaultDelayEndsOnClose(t *testing.T) {
	s := NewServer()
	tk := s.NewSession()
	s.AddFaults(Upload, Fault{Delay: time.Hour})
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", s.UploadEndpoint, bytes.NewReader(make([]byte, 2*maxBufferedBody)))
		req.Header.Set("Authorization", "Bearer "+tk.Access)
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
