package assets

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ErrRefreshRefused: Supabase refused the refresh token (used already, revoked, or unknown).
// The session is over; only a new sign-in helps.
var ErrRefreshRefused = errors.New("refresh token refused")

// Supabase refreshes a proxy-owned session through Supabase's token endpoint (SPEC §8):
// POST {URL}/auth/v1/token?grant_type=refresh_token with the project's publishable key.
// Supabase rotates refresh tokens: each answer carries a new one and the old one is spent.
type Supabase struct {
	URL     string // the project, e.g. https://<project>.supabase.co
	AnonKey string // its publishable key
	Client  *http.Client
}

// tokenAnswer is the part of Supabase's answer the proxy uses.
type tokenAnswer struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresAt    int64  `json:"expires_at"` // Unix seconds
	ExpiresIn    int64  `json:"expires_in"` // seconds
}

// Refresh trades s's refresh token for a new access and refresh token; it is a RefreshFunc.
// A 400 or 401 answer wraps ErrRefreshRefused; anything else that fails is transient.
func (sb Supabase) Refresh(ctx context.Context, s Session) (Session, error) {
	if sb.URL == "" || sb.AnonKey == "" {
		return Session{}, errors.New("app.auth.supabase_url and app.auth.supabase_anon_key are needed to refresh")
	}
	body, _ := json.Marshal(map[string]string{"refresh_token": s.RefreshToken})
	url := strings.TrimRight(sb.URL, "/") + "/auth/v1/token?grant_type=refresh_token"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Session{}, fmt.Errorf("refresh: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("apikey", sb.AnonKey)
	req.Header.Set("Authorization", "Bearer "+sb.AnonKey)
	client := sb.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return Session{}, fmt.Errorf("refresh: %w", redactError(err))
	}
	defer drain(resp)
	if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnauthorized {
		return Session{}, fmt.Errorf("%w: %d %s", ErrRefreshRefused, resp.StatusCode, supabaseError(resp.Body))
	}
	if resp.StatusCode != http.StatusOK {
		return Session{}, fmt.Errorf("refresh: %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	var ans tokenAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBytes)).Decode(&ans); err != nil {
		return Session{}, fmt.Errorf("refresh: decode answer: %w", err)
	}
	if ans.AccessToken == "" || ans.RefreshToken == "" {
		return Session{}, errors.New("refresh: answer without access_token or refresh_token")
	}
	fresh := Session{AccessToken: ans.AccessToken, RefreshToken: ans.RefreshToken, DatasetToken: s.DatasetToken, AutoRefresh: true}
	switch {
	case ans.ExpiresAt > 0:
		fresh.ExpiresAt = time.Unix(ans.ExpiresAt, 0)
	case ans.ExpiresIn > 0:
		fresh.ExpiresAt = time.Now().Add(time.Duration(ans.ExpiresIn) * time.Second)
	}
	return fresh, nil
}

// supabaseError returns the error code of a Supabase Auth error answer, never a token. GoTrue
// answers {"code":400,"error_code":"…","msg":"…"} by default and {"code":"…","message":"…"}
// to clients that send X-Supabase-Api-Version; older versions sent {"error":"invalid_grant"}.
func supabaseError(r io.Reader) string {
	var e struct {
		ErrorCode string          `json:"error_code"`
		Code      json.RawMessage `json:"code"`
		Error     string          `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(r, maxAnswerBytes)).Decode(&e)
	var code string
	switch {
	case e.ErrorCode != "":
		return e.ErrorCode
	case json.Unmarshal(e.Code, &code) == nil && code != "":
		return code
	}
	return e.Error
}

// TokenExpiry reads the exp claim of a JWT without verifying it (the server is the judge of
// a token; the proxy only wants to know when not to send it). It returns zero for a token
// that is not a JWT or has no exp.
func TokenExpiry(tok string) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return time.Time{}
	}
	exp, err := claims.Exp.Float64()
	if err != nil || exp <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(exp), 0)
}
