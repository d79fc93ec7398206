package assettest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestJWKS: the JWKS document holds the ES256 key (P-256, with a kid) that
// signs access tokens, so a verifier that only has the document accepts a
// session's access token.
func TestJWKS(t *testing.T) {
	s, tk, _ := newFake(t)
	code, b := call(t, s, "GET", s.SupabaseURL()+JWKSPath, nil, nil)
	if code != 200 {
		t.Fatalf("JWKS: %d %s", code, b)
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Keys) != 1 {
		t.Fatalf("JWKS document %s: %v", b, err)
	}
	k := doc.Keys[0]
	if k["kty"] != "EC" || k["crv"] != "P-256" || k["alg"] != "ES256" || k["kid"] == "" || k["use"] != "sig" {
		t.Errorf("key %v", k)
	}
	keys, err := parseJWKS(b)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(tk.Access, claims, func(*jwt.Token) (any, error) { return keys[0].pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(func() time.Time { return t0 }))
	if err != nil {
		t.Fatalf("access token does not verify with the JWKS key: %v", err)
	}
	if tok.Header["kid"] != k["kid"] {
		t.Errorf("access token kid %v, JWKS kid %v", tok.Header["kid"], k["kid"])
	}
	if s.TotalRequests() != 0 {
		t.Errorf("the JWKS document was counted as a request")
	}
}

// TestNewSession: a sign-in hands out an access token as GoTrue mints them
// (iss {SupabaseURL}/auth/v1, aud authenticated, 1 h), a refresh token and
// a dataset token as FUSOU mints them (anonymous-sync-v2.ts:195-213, 7 days).
func TestNewSession(t *testing.T) {
	s, tk, _ := newFake(t)
	ac := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tk.Access, ac); err != nil {
		t.Fatal(err)
	}
	if ac["iss"] != s.SupabaseURL()+"/auth/v1" || ac["aud"] != "authenticated" || ac["exp"] != float64(t0.Add(time.Hour).Unix()) ||
		ac["sub"] == "" || ac["session_id"] == "" || ac["role"] != "authenticated" {
		t.Errorf("access claims %v", ac)
	}
	if !tk.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("ExpiresAt %s, want t0 + 1 h", tk.ExpiresAt)
	}
	dc := jwt.MapClaims{}
	dt, _, err := jwt.NewParser().ParseUnverified(tk.Dataset, dc)
	if err != nil {
		t.Fatal(err)
	}
	if dt.Method.Alg() != "HS256" || dc["typ"] != "dataset" || dc["aud"] != "fusou-upload" || dc["sub"] != ac["sub"] ||
		dc["dataset_id"] == "" || dc["exp"] != float64(t0.Add(7*24*time.Hour).Unix()) {
		t.Errorf("dataset token %s %v", dt.Method.Alg(), dc)
	}
	if tk.Refresh == "" {
		t.Error("no refresh token")
	}
	other := s.NewSession()
	if other.Access == tk.Access || other.Refresh == tk.Refresh || other.Dataset == tk.Dataset {
		t.Error("two sign-ins share a token")
	}
}

// TestAccessTokenTTL: SetAccessTokenTTL shortens new access tokens, which
// the routes then refuse once past exp plus the 30 s leeway.
func TestAccessTokenTTL(t *testing.T) {
	s, _, clk := newFake(t)
	s.SetAccessTokenTTL(time.Minute)
	tk := s.NewSession()
	if !tk.ExpiresAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("ExpiresAt %s, want t0 + 1 min", tk.ExpiresAt)
	}
	clk.add(89 * time.Second)
	if code, b := call(t, s, "GET", s.KeysEndpoint, nil, auth(tk)); code != 200 {
		t.Errorf("29 s past exp: %d %s, want 200", code, b)
	}
	clk.add(time.Second)
	if code, _ := call(t, s, "GET", s.KeysEndpoint, nil, auth(tk)); code != 401 {
		t.Errorf("30 s past exp: %d, want 401", code)
	}
	s.SetAccessTokenTTL(0)
	if tk := s.NewSession(); !tk.ExpiresAt.Equal(clk.now().Add(DefaultAccessTokenTTL)) {
		t.Errorf("ExpiresAt after SetAccessTokenTTL(0): %s", tk.ExpiresAt)
	}
}

// TestRevokeToken: a revoked access token is refused at once; the
// session's refresh token still yields a new one that is accepted.
func TestRevokeToken(t *testing.T) {
	s, tk, _ := newFake(t)
	s.RevokeToken(tk.Access)
	if code, _ := call(t, s, "GET", s.KeysEndpoint, nil, auth(tk)); code != 401 {
		t.Errorf("keys with a revoked token: %d, want 401", code)
	}
	if code, _ := call(t, s, "POST", s.UploadEndpoint, validBody(), auth(tk)); code != 401 {
		t.Errorf("handshake with a revoked token: %d, want 401", code)
	}
	ans := refresh(t, s, tk.Refresh, 200)
	tk.Access = ans.AccessToken
	if code, b := call(t, s, "POST", s.UploadEndpoint, validBody(), auth(tk)); code != 200 {
		t.Errorf("handshake with the refreshed token: %d %s", code, b)
	}
}

type refreshAnswer struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	ExpiresAt    int64  `json:"expires_at"`
	RefreshToken string `json:"refresh_token"`
	User         struct {
		ID string `json:"id"`
	} `json:"user"`
	// Errors, in GoTrue's legacy shape.
	Code      any    `json:"code"`
	ErrorCode string `json:"error_code"`
}

// anonHeaders are the headers SPEC §8 has the client send to the token
// endpoint.
var anonHeaders = map[string]string{"apikey": AnonKey, "Authorization": "Bearer " + AnonKey}

// refresh posts a refresh_token grant and checks its status.
func refresh(t *testing.T, s *Server, tok string, want int) refreshAnswer {
	t.Helper()
	code, b := call(t, s, "POST", s.SupabaseURL()+TokenPath+"?grant_type=refresh_token",
		map[string]string{"refresh_token": tok}, anonHeaders)
	if code != want {
		t.Fatalf("refresh: %d %s, want %d", code, b, want)
	}
	var a refreshAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("refresh answer %s: %v", b, err)
	}
	return a
}

// TestRefreshRotation: a refresh answers GoTrue's AccessTokenResponse with
// a new refresh token and a new access token the asset routes accept.
func TestRefreshRotation(t *testing.T) {
	s, tk, clk := newFake(t)
	clk.add(time.Minute)
	a := refresh(t, s, tk.Refresh, 200)
	if a.RefreshToken == "" || a.RefreshToken == tk.Refresh {
		t.Errorf("refresh token not rotated: %q", a.RefreshToken)
	}
	sub := jwt.MapClaims{}
	jwt.NewParser().ParseUnverified(tk.Access, sub)
	if a.TokenType != "bearer" || a.ExpiresIn != 3600 || a.ExpiresAt != clk.now().Add(time.Hour).Unix() ||
		a.AccessToken == "" || a.AccessToken == tk.Access || a.User.ID != sub["sub"] {
		t.Errorf("answer %+v", a)
	}
	tk.Access = a.AccessToken
	if code, b := call(t, s, "GET", s.KeysEndpoint, nil, auth(tk)); code != 200 {
		t.Errorf("keys with the refreshed token: %d %s", code, b)
	}
	if b := refresh(t, s, a.RefreshToken, 200); b.RefreshToken == a.RefreshToken {
		t.Error("second refresh not rotated")
	}
	if s.Refreshes() != 2 || s.Requests(Refresh) != 2 {
		t.Errorf("Refreshes() = %d, want 2", s.Refreshes())
	}
	if got := s.LastHeader(Refresh).Get("apikey"); got != AnonKey {
		t.Errorf("LastHeader(Refresh) apikey = %q", got)
	}
}

// TestRefreshReuse follows GoTrue's legacy refresh tokens
// (internal/tokens/service.go, RefreshTokenGrant).
func TestRefreshReuse(t *testing.T) {
	t.Run("parent of the newest token, however late: the newest back", func(t *testing.T) {
		s, tk, clk := newFake(t)
		r1 := refresh(t, s, tk.Refresh, 200).RefreshToken
		clk.add(time.Hour)
		if got := refresh(t, s, tk.Refresh, 200).RefreshToken; got != r1 {
			t.Errorf("reuse of the parent gave %q, want the newest %q", got, r1)
		}
		if got := refresh(t, s, r1, 200).RefreshToken; got == r1 {
			t.Error("the newest token was not rotated")
		}
	})
	t.Run("older token within the reuse interval: accepted", func(t *testing.T) {
		s, r0, clk := newFake(t)
		r1 := refresh(t, s, r0.Refresh, 200).RefreshToken
		refresh(t, s, r1, 200)
		clk.add(9 * time.Second)
		if got := refresh(t, s, r0.Refresh, 200).RefreshToken; got == "" || got == r1 {
			t.Errorf("reuse within the interval gave %q", got)
		}
	})
	t.Run("older token after the reuse interval: 400, the family revoked", func(t *testing.T) {
		s, r0, clk := newFake(t)
		bystander := s.NewSession()
		r1 := refresh(t, s, r0.Refresh, 200).RefreshToken
		r2 := refresh(t, s, r1, 200).RefreshToken
		clk.add(10 * time.Second)
		a := refresh(t, s, r0.Refresh, 400)
		if a.Code != 400.0 || a.ErrorCode != "refresh_token_already_used" {
			t.Errorf("answer %+v, want code 400, error_code refresh_token_already_used", a)
		}
		for _, tok := range []string{r2, r1} { // the newest of the family fails too
			if a := refresh(t, s, tok, 400); a.ErrorCode != "refresh_token_already_used" {
				t.Errorf("family token after revocation: %+v", a)
			}
		}
		refresh(t, s, bystander.Refresh, 200) // another sign-in is untouched
	})
	t.Run("SetRefreshReuseInterval(0): no reuse of an older token", func(t *testing.T) {
		s, r0, _ := newFake(t)
		s.SetRefreshReuseInterval(0)
		r1 := refresh(t, s, r0.Refresh, 200).RefreshToken
		r2 := refresh(t, s, r1, 200).RefreshToken
		refresh(t, s, r0.Refresh, 400)
		refresh(t, s, r2, 400)
	})
	t.Run("unknown token: 400 refresh_token_not_found", func(t *testing.T) {
		s, _, _ := newFake(t)
		if a := refresh(t, s, "no-such-token", 400); a.Code != 400.0 || a.ErrorCode != "refresh_token_not_found" {
			t.Errorf("answer %+v", a)
		}
	})
}

// TestRefreshRequestRules: the gateway's API key check, SPEC §8's bearer,
// the grant type, the body, and GoTrue's error shapes by API version.
func TestRefreshRequestRules(t *testing.T) {
	s, tk, _ := newFake(t)
	url := s.SupabaseURL() + TokenPath + "?grant_type=refresh_token"
	body := map[string]string{"refresh_token": "nope"}
	for _, tt := range []struct {
		name string
		url  string
		body any
		hdr  map[string]string
		want int
		keys []string // the fields the answer has
	}{
		{"wrong apikey: 401", url, body, with(anonHeaders, "apikey", "wrong"), 401, []string{"message"}},
		{"no apikey: 401", url, body, with(anonHeaders, "apikey", ""), 401, []string{"message"}},
		{"no anon bearer, stricter (SPEC §8): 401", url, body, with(anonHeaders, "Authorization", ""), 401, []string{"message"}},
		{"user's bearer instead of the anon key, stricter: 401", url, body, with(anonHeaders, "Authorization", "Bearer "+tk.Access), 401, []string{"message"}},
		{"other grant_type: 400 unsupported_grant_type", s.SupabaseURL() + TokenPath + "?grant_type=password", body, anonHeaders, 400, []string{"error"}},
		{"body not JSON: 400 bad_json", url, "refresh_token=x", anonHeaders, 400, []string{"code", "error_code", "msg"}},
		{"empty refresh_token: 400 invalid_request", url, map[string]string{}, anonHeaders, 400, []string{"error", "error_description"}},
		{"legacy error shape", url, body, anonHeaders, 400, []string{"code", "error_code", "msg"}},
		{"API version 2024-01-01 error shape", url, body, with(anonHeaders, "X-Supabase-Api-Version", "2024-01-01"), 400, []string{"code", "message"}},
		{"unparsable API version: legacy shape", url, body, with(anonHeaders, "X-Supabase-Api-Version", "v2"), 400, []string{"code", "error_code", "msg"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, b := call(t, s, "POST", tt.url, tt.body, tt.hdr)
			if code != tt.want {
				t.Fatalf("status %d, want %d (%s)", code, tt.want, b)
			}
			var doc map[string]any
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			if len(doc) != len(tt.keys) {
				t.Errorf("answer %s, want the fields %v", b, tt.keys)
			}
			for _, k := range tt.keys {
				if _, ok := doc[k]; !ok {
					t.Errorf("answer %s lacks %q", b, k)
				}
			}
		})
	}
	code, b := call(t, s, "POST", url, body, with(anonHeaders, "X-Supabase-Api-Version", "2024-01-01"))
	var doc map[string]any
	json.Unmarshal(b, &doc)
	if code != 400 || doc["code"] != "refresh_token_not_found" {
		t.Errorf("2024-01-01 answer %s, want code refresh_token_not_found", b)
	}
	if s.Refreshes() != 11 {
		t.Errorf("Refreshes() = %d, want every call counted (11)", s.Refreshes())
	}
}

// TestMintTokens: the claims given are laid over a valid set and nil
// removes one.
func TestMintTokens(t *testing.T) {
	s, _, _ := newFake(t)
	c := jwt.MapClaims{}
	jwt.NewParser().ParseUnverified(s.MintAccessToken(jwt.MapClaims{"aud": "x", "exp": nil}), c)
	if _, hasExp := c["exp"]; c["aud"] != "x" || hasExp || c["iss"] != s.SupabaseURL()+"/auth/v1" {
		t.Errorf("minted access claims %v", c)
	}
	c = jwt.MapClaims{}
	jwt.NewParser().ParseUnverified(s.MintDatasetToken(jwt.MapClaims{"typ": "x", "sub": nil}), c)
	if _, hasSub := c["sub"]; c["typ"] != "x" || hasSub || c["aud"] != "fusou-upload" {
		t.Errorf("minted dataset claims %v", c)
	}
}
