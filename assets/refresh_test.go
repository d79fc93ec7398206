package assets

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeJWT is an unsigned token with the given exp claim (0: none), enough for TokenExpiry,
// which never verifies.
func fakeJWT(exp int64, salt string) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims := fmt.Sprintf(`{"sub":%q}`, salt)
	if exp != 0 {
		claims = fmt.Sprintf(`{"sub":%q,"exp":%d}`, salt, exp)
	}
	return enc([]byte(`{"alg":"ES256"}`)) + "." + enc([]byte(claims)) + ".sig"
}

func TestTokenExpiry(t *testing.T) {
	for _, c := range []struct {
		name string
		tok  string
		want int64 // Unix seconds, 0 for none
	}{
		{"JWT with exp", fakeJWT(1900000000, "a"), 1900000000},
		{"JWT without exp", fakeJWT(0, "a"), 0},
		{"opaque token", "not-a-jwt", 0},
		{"bad base64", "a.!!!.c", 0},
		{"payload not JSON", "a." + base64.RawURLEncoding.EncodeToString([]byte("x")) + ".c", 0},
		{"exp a string", "a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":"soon"}`)) + ".c", 0},
	} {
		got := TokenExpiry(c.tok)
		if (c.want == 0) != got.IsZero() || (c.want != 0 && got.Unix() != c.want) {
			t.Errorf("%s: TokenExpiry = %v, want %d", c.name, got, c.want)
		}
	}
}

// An expired or missing token counts as missing: no request would be sent.
func TestSessionUnusable(t *testing.T) {
	now := time.Unix(1800000000, 0)
	live, dead := fakeJWT(now.Unix()+60, "live"), fakeJWT(now.Unix()-1, "dead")
	for _, c := range []struct {
		name string
		s    Session
		want error
	}{
		{"usable", Session{AccessToken: live, DatasetToken: live}, nil},
		{"opaque tokens, expiry unknown", Session{AccessToken: "acc", DatasetToken: "ds"}, nil},
		{"no access token", Session{DatasetToken: live}, ErrNoSession},
		{"access token expired by its exp", Session{AccessToken: dead, DatasetToken: live}, ErrSessionExpired},
		{"access token expired by expires_at", Session{AccessToken: live, DatasetToken: live, ExpiresAt: now}, ErrSessionExpired},
		{"no dataset token", Session{AccessToken: live}, ErrNoDatasetToken},
		{"dataset token expired", Session{AccessToken: live, DatasetToken: dead}, ErrDatasetExpired},
	} {
		if got := c.s.Unusable(now); !errors.Is(got, c.want) || (c.want == nil) != (got == nil) {
			t.Errorf("%s: Unusable = %v, want %v", c.name, got, c.want)
		}
		if c.want != nil && Classify(0, c.want) != Auth {
			t.Errorf("%s: %v does not classify as Auth", c.name, c.want)
		}
	}
}

// refreshCounter is a RefreshFunc that mints a new session per call, or fails with err.
type refreshCounter struct {
	calls atomic.Int32
	err   error
	exp   time.Time
	gate  chan struct{} // when not nil, each call waits for it to close
}

func (r *refreshCounter) refresh(ctx context.Context, s Session) (Session, error) {
	n := r.calls.Add(1)
	if r.gate != nil {
		<-r.gate
	}
	if r.err != nil {
		return Session{}, r.err
	}
	return Session{AccessToken: fmt.Sprintf("access-%d", n), RefreshToken: fmt.Sprintf("refresh-%d", n), ExpiresAt: r.exp}, nil
}

// waitStarted polls, with a deadline, until a refresh is under way.
func (r *refreshCounter) waitStarted(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no refresh started within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

func newOwnedHolder(t *testing.T, r *refreshCounter, now time.Time, s Session) (*SessionHolder, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.WarnLevel)
	h := &SessionHolder{now: func() time.Time { return now }}
	h.SetRefresher(r.refresh, nil, zap.New(core))
	h.Set(s)
	return h, logs
}

// A proxy-owned session is refreshed within 30 s of its expiry; a caller's never is.
func TestUsableRefreshesOwnedSessionNearExpiry(t *testing.T) {
	now := time.Unix(1800000000, 0)
	for _, c := range []struct {
		name        string
		auto        bool
		expiresIn   time.Duration
		wantRefresh bool
		wantErr     error
	}{
		{"owned, 10 min left", true, 10 * time.Minute, false, nil},
		{"owned, 29 s left", true, 29 * time.Second, true, nil},
		{"owned, expired", true, -time.Minute, true, nil},
		{"caller's, 29 s left", false, 29 * time.Second, false, nil},
		{"caller's, expired", false, -time.Minute, false, ErrSessionExpired},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &refreshCounter{exp: now.Add(time.Hour)}
			h, _ := newOwnedHolder(t, r, now, Session{AccessToken: "access-0", RefreshToken: "refresh-0",
				DatasetToken: "ds", ExpiresAt: now.Add(c.expiresIn), AutoRefresh: c.auto})
			s, err := h.Usable(context.Background())
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
				t.Fatalf("Usable error = %v, want %v", err, c.wantErr)
			}
			if got := r.calls.Load() == 1; got != c.wantRefresh {
				t.Fatalf("refreshed = %v, want %v", got, c.wantRefresh)
			}
			if c.wantRefresh {
				if s.AccessToken != "access-1" || !s.AutoRefresh || s.DatasetToken != "ds" {
					t.Errorf("Usable returned %v (access %q), want the refreshed session keeping its dataset token", s, s.AccessToken)
				}
				if held, _ := h.Get(); held.RefreshToken != "refresh-1" {
					t.Error("the rotated refresh token did not replace the old one")
				}
			}
		})
	}
}

// Concurrent uploads that all meet a 401 wait for one refresh and use its result.
func TestRefreshIsSingleFlight(t *testing.T) {
	now := time.Unix(1800000000, 0)
	r := &refreshCounter{exp: now.Add(time.Hour), gate: make(chan struct{})}
	stale := Session{AccessToken: "access-0", RefreshToken: "refresh-0", DatasetToken: "ds", AutoRefresh: true}
	h, _ := newOwnedHolder(t, r, now, stale)
	const n = 16
	var wg sync.WaitGroup
	results := make(chan bool, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- h.RefreshAfter401(context.Background(), stale)
		}()
	}
	r.waitStarted(t)
	close(r.gate)
	wg.Wait()
	close(results)
	for ok := range results {
		if !ok {
			t.Error("a caller was told no new session is held")
		}
	}
	if got := r.calls.Load(); got != 1 {
		t.Errorf("%d refreshes for %d concurrent 401s, want 1", got, n)
	}
}

// A refused refresh clears the session with one WARN; a failed one keeps it.
func TestRefreshRefusedClearsSession(t *testing.T) {
	now := time.Unix(1800000000, 0)
	stale := Session{AccessToken: "access-0", RefreshToken: "refresh-0", DatasetToken: "ds", AutoRefresh: true}

	r := &refreshCounter{err: fmt.Errorf("%w: 400 refresh_token_already_used", ErrRefreshRefused)}
	h, logs := newOwnedHolder(t, r, now, stale)
	if h.RefreshAfter401(context.Background(), stale) {
		t.Error("RefreshAfter401 reported a new session after a refused refresh")
	}
	if _, ok := h.Get(); ok {
		t.Error("the session is still held after Supabase refused its refresh token")
	}
	if h.RefreshAfter401(context.Background(), stale) {
		t.Error("a second RefreshAfter401 reported a new session")
	}
	if got := logs.FilterMessageSnippet("Session cleared").Len(); got != 1 {
		t.Errorf("%d WARN lines about the cleared session, want 1", got)
	}

	r = &refreshCounter{err: errors.New("connection refused")}
	h, _ = newOwnedHolder(t, r, now, stale)
	if h.RefreshAfter401(context.Background(), stale) {
		t.Error("RefreshAfter401 reported a new session after a failed refresh")
	}
	if s, ok := h.Get(); !ok || s.AccessToken != "access-0" {
		t.Error("a transient refresh failure dropped the session")
	}
}

// A session posted while a refresh is under way is not overwritten by the refresh's answer.
func TestRefreshDoesNotOverwriteAPostedSession(t *testing.T) {
	now := time.Unix(1800000000, 0)
	r := &refreshCounter{exp: now.Add(time.Hour), gate: make(chan struct{})}
	stale := Session{AccessToken: "access-0", RefreshToken: "refresh-0", DatasetToken: "ds", AutoRefresh: true}
	h, _ := newOwnedHolder(t, r, now, stale)
	done := make(chan bool)
	go func() { done <- h.RefreshAfter401(context.Background(), stale) }()
	r.waitStarted(t)
	h.Set(Session{AccessToken: "posted", RefreshToken: "posted-r", DatasetToken: "ds"})
	close(r.gate)
	<-done
	if s, _ := h.Get(); s.AccessToken != "posted" {
		t.Errorf("held access token %q, want the posted one", s.AccessToken)
	}
}

// The dataset token's coming expiry is warned about once, a day ahead.
func TestDatasetExpiryWarnsOnce(t *testing.T) {
	now := time.Unix(1800000000, 0)
	soon := fakeJWT(now.Add(23*time.Hour).Unix(), "ds")
	later := fakeJWT(now.Add(48*time.Hour).Unix(), "ds2")
	r := &refreshCounter{}
	h, logs := newOwnedHolder(t, r, now, Session{AccessToken: "a", DatasetToken: later})
	h.WarnIfExpiring()
	if logs.Len() != 0 {
		t.Fatalf("warned two days ahead: %v", logs.All())
	}
	h.Set(Session{AccessToken: "a", DatasetToken: soon})
	for range 3 {
		h.WarnIfExpiring()
		if _, err := h.Usable(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := logs.FilterMessageSnippet("dataset token expires soon").Len(); got != 1 {
		t.Errorf("%d WARN lines, want 1", got)
	}
}

// The refusal reason is read from every shape of GoTrue's error answer.
func TestSupabaseErrorShapes(t *testing.T) {
	for body, want := range map[string]string{
		`{"code":400,"error_code":"refresh_token_already_used","msg":"Invalid Refresh Token: Already Used"}`: "refresh_token_already_used",
		`{"code":"refresh_token_not_found","message":"Invalid Refresh Token"}`:                               "refresh_token_not_found",
		`{"error":"invalid_grant","error_description":"Invalid Refresh Token"}`:                              "invalid_grant",
		`not json`: "",
	} {
		if got := supabaseError(strings.NewReader(body)); got != want {
			t.Errorf("supabaseError(%s) = %q, want %q", body, got, want)
		}
	}
}
