package assettest

import (
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// GoTrue's error codes for a refused refresh token (supabase/auth
// internal/api/apierrors/errorcode.go).
const (
	codeRefreshNotFound    = "refresh_token_not_found"
	codeRefreshAlreadyUsed = "refresh_token_already_used"
)

// maxRefreshBody bounds the token endpoint's JSON body.
const maxRefreshBody = 64 << 10

// serveRefresh is POST /auth/v1/token?grant_type=refresh_token: check the
// API key, then rotate the refresh token as GoTrue does
// (internal/tokens/service.go, RefreshTokenGrant).
func (s *Server) serveRefresh(w http.ResponseWriter, r *http.Request) {
	// The Supabase gateway checks the API key before GoTrue sees anything.
	key := r.Header.Get("apikey")
	if key == "" {
		key = r.URL.Query().Get("apikey")
	}
	switch {
	case key == "":
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "No API key found in request"})
		return
	case key != AnonKey:
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Invalid API key"})
		return
	}
	// Stricter than Supabase: SPEC §8 has the client send the anon key as
	// the bearer token too.
	if tok, ok := keysBearer(r); !ok || tok != AnonKey {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Authorization: Bearer <anon key> required"})
		return
	}
	// internal/api/token.go, Token: an OAuth error for another grant.
	if r.URL.Query().Get("grant_type") != "refresh_token" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	var params struct {
		RefreshToken string `json:"refresh_token"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRefreshBody))
	if err != nil || json.Unmarshal(body, &params) != nil {
		writeGoTrueError(w, r, http.StatusBadRequest, "bad_json", "Could not parse request body as JSON")
		return
	}
	if params.RefreshToken == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{
			"error": "invalid_request", "error_description": "refresh_token required",
		})
		return
	}

	s.mu.Lock()
	now := s.now()
	issued, fam, code := s.rotateLocked(params.RefreshToken, now)
	var claims map[string]any
	ttl := s.accessTTL
	if code == "" {
		claims = s.accessClaimsLocked(fam, now)
	}
	s.mu.Unlock()

	switch code {
	case codeRefreshNotFound:
		writeGoTrueError(w, r, http.StatusBadRequest, code, "Invalid Refresh Token: Refresh Token Not Found")
		return
	case codeRefreshAlreadyUsed:
		writeGoTrueError(w, r, http.StatusBadRequest, code, "Invalid Refresh Token: Already Used")
		return
	}
	access, exp := s.signAccess(claims)
	stamp := now.UTC().Format(time.RFC3339Nano)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":  access,
		"token_type":    "bearer",
		"expires_in":    int(ttl / time.Second),
		"expires_at":    exp.Unix(),
		"refresh_token": issued,
		"user": map[string]any{
			"id":            fam.user,
			"aud":           AccessAudience,
			"role":          "authenticated",
			"email":         "",
			"phone":         "",
			"app_metadata":  claims["app_metadata"],
			"user_metadata": map[string]any{},
			"identities":    []any{},
			"created_at":    stamp,
			"updated_at":    stamp,
			"is_anonymous":  true,
		},
	})
}

// rotateLocked uses the refresh token tok at now and returns the refresh
// token to hand out and its family, or the error code to answer. It
// follows GoTrue's legacy refresh tokens (internal/tokens/service.go,
// RefreshTokenGrant): a token not used yet is rotated; the parent of the
// family's newest token gets the newest back, however late; another used
// token is rotated again within the reuse interval and otherwise revokes
// the family. mu must be held.
func (s *Server) rotateLocked(tok string, now time.Time) (string, *tokenFamily, string) {
	rt, ok := s.refreshTokens[tok]
	switch {
	case !ok:
		return "", nil, codeRefreshNotFound
	case rt.family.revoked:
		return "", nil, codeRefreshAlreadyUsed
	case rt.rotatedAt.IsZero():
		rt.rotatedAt = now
		return s.newRefreshTokenLocked(rt.family, tok), rt.family, ""
	case s.refreshTokens[rt.family.newest].parent == tok:
		// The client most likely lost the answer of its last refresh.
		return rt.family.newest, rt.family, ""
	case now.Sub(rt.rotatedAt) >= s.reuseInterval:
		// GoTrue still allows the reuse at the interval's very end; the
		// fake does not, so that an interval of 0 allows none.
		rt.family.revoked = true
		return "", nil, codeRefreshAlreadyUsed
	}
	return s.newRefreshTokenLocked(rt.family, tok), rt.family, ""
}

// writeGoTrueError answers an error as GoTrue does (internal/api/errors.go,
// HandleResponseError): {"code":<status>,"error_code","msg"}, or
// {"code":<error_code>,"message"} when the request asks for API version
// 2024-01-01 or later.
func writeGoTrueError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if v, err := time.Parse(time.DateOnly, r.Header.Get("X-Supabase-Api-Version")); err == nil &&
		!v.Before(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) {
		w.Header().Set("X-Supabase-Api-Version", "2024-01-01")
		writeJSON(w, status, map[string]any{"code": code, "message": msg})
		return
	}
	writeJSON(w, status, map[string]any{"code": status, "error_code": code, "msg": msg})
}
