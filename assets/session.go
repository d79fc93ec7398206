package assets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Session is the user's FUSOU session, as posted to the control endpoint.
// It lives in memory only. Every way of printing or marshalling it (fmt
// verbs, String, GoString, JSON, zap) shows which tokens are set, never
// the tokens.
type Session struct {
	AccessToken  string    // sent as "Authorization: Bearer"
	RefreshToken string    // sent only to Supabase, to refresh a session the proxy owns
	DatasetToken string    // sent as X-Dataset-Token with every upload request
	ExpiresAt    time.Time // the access token's expiry, zero if unknown
	// AutoRefresh marks a session handed over for good: the proxy owns it and refreshes it.
	// A caller that refreshes its own session (the FUSOU app) leaves it false, since
	// Supabase refresh tokens are single-use and a second refresher would revoke the
	// caller's session (SPEC §8).
	AutoRefresh bool
}

const redacted = "[REDACTED]"

func mask(tok string) string {
	if tok == "" {
		return ""
	}
	return redacted
}

// String describes the session without its tokens.
func (s Session) String() string {
	exp := "unknown"
	if !s.ExpiresAt.IsZero() {
		exp = s.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("Session{AccessToken:%q RefreshToken:%q DatasetToken:%q ExpiresAt:%s AutoRefresh:%t}",
		mask(s.AccessToken), mask(s.RefreshToken), mask(s.DatasetToken), exp, s.AutoRefresh)
}

// GoString is String, so that %#v redacts too.
func (s Session) GoString() string { return "assets." + s.String() }

// Format makes every fmt verb (%v, %+v, %#v, %s, %q, %x, ...) print the
// redacted form; without it %x would print the tokens in hex.
func (s Session) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, s.GoString())
		return
	}
	io.WriteString(f, s.String())
}

// MarshalJSON writes the redacted form, so a Session cannot be persisted or
// served by accident.
func (s Session) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		AccessToken  string     `json:"access_token,omitempty"`
		RefreshToken string     `json:"refresh_token,omitempty"`
		DatasetToken string     `json:"dataset_token,omitempty"`
		ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	}{mask(s.AccessToken), mask(s.RefreshToken), mask(s.DatasetToken), timePtr(s.ExpiresAt)})
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// MarshalLogObject lets zap.Object log the session, redacted.
func (s Session) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddBool("access_token_set", s.AccessToken != "")
	enc.AddBool("refresh_token_set", s.RefreshToken != "")
	enc.AddBool("dataset_token_set", s.DatasetToken != "")
	enc.AddBool("auto_refresh", s.AutoRefresh)
	if !s.ExpiresAt.IsZero() {
		enc.AddTime("expires_at", s.ExpiresAt)
	}
	return nil
}

// AccessExpiry is when the access token expires: ExpiresAt when known, else the token's own
// exp claim; zero when neither says.
func (s Session) AccessExpiry() time.Time {
	if !s.ExpiresAt.IsZero() {
		return s.ExpiresAt
	}
	return TokenExpiry(s.AccessToken)
}

// DatasetExpiry is the dataset token's exp claim, zero when it has none.
func (s Session) DatasetExpiry() time.Time { return TokenExpiry(s.DatasetToken) }

// Unusable says why no upload request may be sent with s at now, or returns nil. An expired
// token counts as missing: the server would refuse it, so nothing is sent to be refused.
func (s Session) Unusable(now time.Time) error {
	switch {
	case s.AccessToken == "":
		return ErrNoSession
	case expired(s.AccessExpiry(), now):
		return ErrSessionExpired
	case s.DatasetToken == "":
		return ErrNoDatasetToken
	case expired(s.DatasetExpiry(), now):
		return ErrDatasetExpired
	}
	return nil
}

func expired(exp, now time.Time) bool { return !exp.IsZero() && !exp.After(now) }

// SessionHolder holds the current session, if any. Its zero value holds
// none and is ready to use; it is safe for concurrent use and must not be
// copied. The control endpoint sets it; the uploader and the index read it
// at send time, so a session posted mid-pass is used by the next request.
type SessionHolder struct {
	mu      sync.RWMutex // guards s, ok, version and warned
	s       Session
	ok      bool
	version uint64
	warned  string // the dataset token last warned about, so the WARN comes once

	refreshMu sync.Mutex // held across a refresh: one at a time, the others wait for it
	refresh   RefreshFunc
	onChange  func() // after every change of session; it reads the new one with Get
	log       *zap.Logger
	now       func() time.Time
}

// RefreshFunc trades s's refresh token for a new session. It returns an error wrapping
// ErrRefreshRefused when the refresh token is no longer valid.
type RefreshFunc func(ctx context.Context, s Session) (Session, error)

// refreshMargin is how long before its expiry a proxy-owned access token is refreshed.
const refreshMargin = 30 * time.Second

// datasetWarnAhead is how long before the dataset token's expiry a WARN says so.
const datasetWarnAhead = 24 * time.Hour

// SetRefresher makes the holder refresh proxy-owned sessions with fn, and call onChange
// (when not nil) after every change of session, for the keychain. It is called once, before
// use.
func (h *SessionHolder) SetRefresher(fn RefreshFunc, onChange func(), log *zap.Logger) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refresh, h.onChange, h.log = fn, onChange, log
}

// Get returns the current session and whether one is set.
func (h *SessionHolder) Get() (Session, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.s, h.ok
}

// Set makes s the current session. A session without an access token
// counts as none.
func (h *SessionHolder) Set(s Session) {
	h.mu.Lock()
	h.s, h.ok = s, s.AccessToken != ""
	if !h.ok {
		h.s = Session{}
	}
	h.version++
	onChange := h.onChange
	h.mu.Unlock()
	if onChange != nil {
		onChange()
	}
}

// Clear forgets the session.
func (h *SessionHolder) Clear() { h.Set(Session{}) }

// Version counts the Set and Clear calls so far, so a caller can tell
// whether the session changed since it last looked.
func (h *SessionHolder) Version() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.version
}

// Usable returns a session to send requests with: the current one, refreshed first when the
// proxy owns it and its access token expires within refreshMargin. Without a usable session
// it returns the reason (ErrNoSession, ErrSessionExpired, ErrNoDatasetToken,
// ErrDatasetExpired), and nothing should be sent.
func (h *SessionHolder) Usable(ctx context.Context) (Session, error) {
	s, err := h.Authorized(ctx)
	if err != nil {
		return s, err
	}
	now := h.clock()
	h.warnDatasetExpiry(s, now)
	if err := s.Unusable(now); err != nil {
		return Session{}, err
	}
	return s, nil
}

// Authorized is Usable for requests that need only the access token (the keys listing).
func (h *SessionHolder) Authorized(ctx context.Context) (Session, error) {
	s, ok := h.Get()
	if !ok {
		return Session{}, ErrNoSession
	}
	now := h.clock()
	if exp := s.AccessExpiry(); s.AutoRefresh && !exp.IsZero() && exp.Sub(now) < refreshMargin {
		fresh, err := h.refreshFrom(ctx, s)
		switch {
		case err == nil:
			s = fresh
		case errors.Is(err, ErrRefreshRefused), errors.Is(err, ErrNoSession):
			return Session{}, ErrNoSession
		}
	}
	if expired(s.AccessExpiry(), now) {
		return Session{}, ErrSessionExpired
	}
	return s, nil
}

// RefreshAfter401 is called when the server refused stale's access token. For a proxy-owned
// session it refreshes once (or waits for a refresh already under way) and reports whether
// a different session is now held, worth one more try.
func (h *SessionHolder) RefreshAfter401(ctx context.Context, stale Session) bool {
	if !stale.AutoRefresh {
		return false
	}
	fresh, err := h.refreshFrom(ctx, stale)
	return err == nil && fresh.AccessToken != stale.AccessToken
}

// refreshFrom refreshes the session if it still is stale; when another caller refreshed (or
// a new session was posted) meanwhile, it returns that one instead. Refreshes are single-
// flight: refreshMu is held across the request, so concurrent uploads wait for one refresh.
func (h *SessionHolder) refreshFrom(ctx context.Context, stale Session) (Session, error) {
	h.refreshMu.Lock()
	defer h.refreshMu.Unlock()
	cur, ok := h.Get()
	if !ok {
		return Session{}, ErrNoSession
	}
	if cur.AccessToken != stale.AccessToken || !cur.AutoRefresh {
		return cur, nil
	}
	h.mu.RLock()
	refresh, log := h.refresh, h.logger()
	h.mu.RUnlock()
	if refresh == nil {
		return cur, ErrSessionExpired
	}
	fresh, err := refresh(ctx, cur)
	switch {
	case errors.Is(err, ErrRefreshRefused):
		log.Warn("Session cleared: Supabase refused its refresh token; post a new session", zap.Error(err))
		h.clearIf(cur)
		return Session{}, err
	case err != nil:
		log.Warn("Session refresh failed; will try again", zap.Error(err))
		return cur, err
	}
	fresh.AutoRefresh = true
	if fresh.DatasetToken == "" {
		fresh.DatasetToken = cur.DatasetToken
	}
	h.setIf(cur, fresh)
	log.Info("session refreshed", zap.Object("session", fresh))
	return fresh, nil
}

// setIf replaces the session with next only if it still is cur, so that a session posted
// during a refresh is not overwritten by the refresh's answer.
func (h *SessionHolder) setIf(cur, next Session) {
	h.mu.RLock()
	same := h.ok && h.s.AccessToken == cur.AccessToken
	h.mu.RUnlock()
	if same {
		h.Set(next)
	}
}

func (h *SessionHolder) clearIf(cur Session) { h.setIf(cur, Session{}) }

// warnDatasetExpiry logs one WARN per dataset token once it has less than a day to live.
func (h *SessionHolder) warnDatasetExpiry(s Session, now time.Time) {
	exp := s.DatasetExpiry()
	if exp.IsZero() || exp.Sub(now) > datasetWarnAhead {
		return
	}
	h.mu.Lock()
	first := h.warned != s.DatasetToken
	h.warned = s.DatasetToken
	log := h.logger()
	h.mu.Unlock()
	if first {
		log.Warn("The dataset token expires soon; uploads stop then until the FUSOU app posts a new session",
			zap.Time("dataset_expires_at", exp))
	}
}

// WarnIfExpiring checks the held session's dataset token, for a timer.
func (h *SessionHolder) WarnIfExpiring() {
	if s, ok := h.Get(); ok {
		h.warnDatasetExpiry(s, h.clock())
	}
}

// logger returns the logger, or a no-op one; mu must be held.
func (h *SessionHolder) logger() *zap.Logger {
	if h.log == nil {
		return zap.NewNop()
	}
	return h.log
}

func (h *SessionHolder) clock() time.Time {
	if h.now != nil {
		return h.now()
	}
	return time.Now()
}

// String describes the held session, redacted. fmt cannot call Session's
// methods on an unexported field, so without this %v of a holder would
// print the tokens.
func (h *SessionHolder) String() string {
	s, ok := h.Get()
	if !ok {
		return "SessionHolder{none}"
	}
	return "SessionHolder{" + s.String() + "}"
}

// GoString is String, so that %#v redacts too.
func (h *SessionHolder) GoString() string { return "&assets." + h.String() }

// Format makes every fmt verb print the redacted form.
func (h *SessionHolder) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, h.GoString())
		return
	}
	io.WriteString(f, h.String())
}

// MarshalJSON writes the held session, redacted, or null.
func (h *SessionHolder) MarshalJSON() ([]byte, error) {
	s, ok := h.Get()
	if !ok {
		return []byte("null"), nil
	}
	return s.MarshalJSON()
}

// MarshalLogObject lets zap.Object log the holder, redacted.
func (h *SessionHolder) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	s, ok := h.Get()
	enc.AddBool("present", ok)
	if !ok {
		return nil
	}
	return s.MarshalLogObject(enc)
}
