package assets

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Class is what an upload outcome means for its pending entry (SPEC §5).
// The zero Class is not an outcome; it prints as "unknown".
type Class int

// The outcome classes of SPEC §5.
const (
	// Success: stored, or already stored (409). Delete the entry and
	// remember (key, hash).
	Success Class = iota + 1
	// Auth: 401/403, or no session. Keep the entry without counting an
	// attempt; stop the retry pass until a session is posted.
	Auth
	// Transient: a network error, a timeout, 408, 425, 429 or a 5xx but
	// 501. Keep the entry, count the attempt, honour Result.RetryAfter.
	Transient
	// Permanent: any other 4xx, 501, or an answer the client cannot use.
	// Move the entry to rejected/; never retry it.
	Permanent
)

func (c Class) String() string {
	switch c {
	case Success:
		return "success"
	case Auth:
		return "auth"
	case Transient:
		return "transient"
	case Permanent:
		return "permanent"
	}
	return "unknown"
}

// MaxRetryAfter caps a server's Retry-After (SPEC §5).
const MaxRetryAfter = time.Hour

// Sentinel errors, found in Result.Err with errors.Is.
var (
	// ErrNoSession: no session is set, so no request was sent.
	ErrNoSession = errors.New("no session")
	// ErrSessionExpired: the session's access token has expired (and could not be
	// refreshed), so no request was sent.
	ErrSessionExpired = errors.New("session expired")
	// ErrNoDatasetToken: the session has no dataset token, which the server requires of
	// every upload, so no request was sent.
	ErrNoDatasetToken = errors.New("no dataset token")
	// ErrDatasetExpired: the session's dataset token has expired, so no request was sent.
	ErrDatasetExpired = errors.New("dataset token expired")
	// ErrBadAnswer: the server answered 2xx with a body the client cannot
	// use (not the JSON it should be, or missing fields).
	ErrBadAnswer = errors.New("unusable answer from server")
	// ErrStalled: a try made no progress for RequestTimeout.
	ErrStalled = errors.New("request stalled")
	// ErrInvalidAsset: the asset fails Asset.Validate; no request was sent.
	ErrInvalidAsset = errors.New("invalid asset")
	// ErrUploadURL: the handshake named an upload URL the client refuses
	// to send the session's token to (not http(s), or another origin).
	ErrUploadURL = errors.New("upload URL refused")
)

// StatusError is the error of a Result (or of Index.Refresh) whose outcome
// was decided by an HTTP status.
type StatusError struct {
	Stage  string // "handshake", "upload" or "keys"
	Status int
	Class  Class
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: %d %s (%s)", e.Stage, e.Status, http.StatusText(e.Status), e.Class)
}

// Classify is the one place that maps an outcome to its Class: err is the
// error of the exchange (nil if a response came), status the response's
// status. SPEC §5's table, plus what it leaves open: 1xx and 3xx (the
// uploader follows no redirects) are Permanent, so that a misconfigured
// endpoint parks entries in rejected/ instead of burning their attempts.
func Classify(status int, err error) Class {
	switch {
	case err != nil:
		switch {
		case errors.Is(err, ErrNoSession), errors.Is(err, ErrSessionExpired),
			errors.Is(err, ErrNoDatasetToken), errors.Is(err, ErrDatasetExpired):
			return Auth
		case errors.Is(err, ErrInvalidAsset), errors.Is(err, ErrUploadURL):
			return Permanent
		}
		// Network errors, timeouts, stalls, and a 2xx answer the client
		// cannot use (a captive portal's page, a server bug): all may pass.
		return Transient
	case status >= 200 && status < 300, status == http.StatusConflict:
		return Success
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		return Auth
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests:
		return Transient
	case status == http.StatusNotImplemented:
		return Permanent
	case status >= 500 && status < 600:
		return Transient
	}
	return Permanent
}

// ParseRetryAfter reads a Retry-After header value, delay-seconds or an
// HTTP date, as a wait from now, capped at MaxRetryAfter. ok is false when
// the value is empty or malformed; a date in the past is a zero wait.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if strings.Trim(v, "0123456789") == "" { // delay-seconds
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true // too large for an int64 is too large anyway
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), MaxRetryAfter), true
}
