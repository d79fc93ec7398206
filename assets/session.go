package assets

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"
)

// Session is the user's FUSOU session, as posted to the control endpoint.
// It lives in memory only. Every way of printing or marshalling it (fmt
// verbs, String, GoString, JSON, zap) shows which tokens are set, never
// the tokens.
type Session struct {
	AccessToken  string    // sent as "Authorization: Bearer"
	RefreshToken string    // kept for whoever refreshes the session; never sent here
	DatasetToken string    // sent as X-Dataset-Token at stage 1 when set
	ExpiresAt    time.Time // the access token's expiry, zero if unknown
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
	return fmt.Sprintf("Session{AccessToken:%q RefreshToken:%q DatasetToken:%q ExpiresAt:%s}",
		mask(s.AccessToken), mask(s.RefreshToken), mask(s.DatasetToken), exp)
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
	if !s.ExpiresAt.IsZero() {
		enc.AddTime("expires_at", s.ExpiresAt)
	}
	return nil
}

// Expired reports whether ExpiresAt is set and not after now. The uploader
// does not consult it: the server is the judge of a token, and a clock
// that is off should not stop uploads.
func (s Session) Expired(now time.Time) bool {
	return !s.ExpiresAt.IsZero() && !s.ExpiresAt.After(now)
}

// SessionHolder holds the current session, if any. Its zero value holds
// none and is ready to use; it is safe for concurrent use and must not be
// copied. The control endpoint sets it; the uploader and the index read it
// at send time, so a session posted mid-pass is used by the next request.
type SessionHolder struct {
	mu      sync.RWMutex // guards s, ok and version
	s       Session
	ok      bool
	version uint64
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
	defer h.mu.Unlock()
	h.s, h.ok = s, s.AccessToken != ""
	if !h.ok {
		h.s = Session{}
	}
	h.version++
}

// Clear forgets the session.
func (h *SessionHolder) Clear() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.s, h.ok = Session{}, false
	h.version++
}

// Version counts the Set and Clear calls so far, so a caller can tell
// whether the session changed since it last looked.
func (h *SessionHolder) Version() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.version
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
