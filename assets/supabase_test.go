package assets

import (
	"context"
	"errors"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// Refresh against the fake's Supabase: each answer rotates the refresh token and keeps the
// dataset token; a spent token two rotations back is refused (ErrRefreshRefused), and then
// the whole sign-in is revoked, as GoTrue does.
func TestSupabaseRefreshRotates(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	srv.SetRefreshReuseInterval(0)
	tok := srv.NewSession()
	sb := Supabase{URL: srv.SupabaseURL(), AnonKey: assettest.AnonKey, Client: srv.Client()}
	ctx := context.Background()
	s0 := Session{AccessToken: tok.Access, RefreshToken: tok.Refresh, DatasetToken: tok.Dataset, AutoRefresh: true}

	s1, err := sb.Refresh(ctx, s0)
	if err != nil {
		t.Fatal(err)
	}
	if s1.AccessToken == s0.AccessToken || s1.RefreshToken == s0.RefreshToken || s1.DatasetToken != s0.DatasetToken ||
		!s1.AutoRefresh || s1.ExpiresAt.IsZero() {
		t.Fatalf("refreshed session %v: want new access and refresh tokens, the same dataset token, an expiry", s1)
	}
	if !TokenExpiry(s1.AccessToken).Equal(s1.ExpiresAt) {
		t.Errorf("expires_at %v differs from the token's exp %v", s1.ExpiresAt, TokenExpiry(s1.AccessToken))
	}
	s2, err := sb.Refresh(ctx, s1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Refresh(ctx, s0); !errors.Is(err, ErrRefreshRefused) {
		t.Fatalf("a refresh token two rotations old: err %v, want ErrRefreshRefused", err)
	}
	if _, err := sb.Refresh(ctx, s2); !errors.Is(err, ErrRefreshRefused) {
		t.Errorf("after a reuse the newest token still refreshes (err %v): the family was not revoked", err)
	}

	bad := Supabase{URL: srv.SupabaseURL(), AnonKey: "wrong", Client: srv.Client()}
	if _, err := bad.Refresh(ctx, s0); !errors.Is(err, ErrRefreshRefused) {
		t.Errorf("a wrong anon key: err %v, want ErrRefreshRefused (401)", err)
	}
	if _, err := (Supabase{}).Refresh(ctx, s0); err == nil || errors.Is(err, ErrRefreshRefused) {
		t.Errorf("no Supabase configured: err %v, want a plain error that keeps the session", err)
	}
}
