// Package control is fusou-proxy's local HTTP API (SPEC §8): the FUSOU app posts the user's
// session tokens to it and asks for retry passes, operators read status, pending entries and
// metrics, and browsers fetch the PAC file and the CA certificate.
//
// Start with [Listen], which refuses a non-loopback address unless remote access is allowed,
// then [New] and [Server.Serve]. A [Server] is an http.Handler; it reaches the rest of the
// program only through the small interfaces below, which the command wires.
//
// The endpoint receives secrets, so every request passes these checks, in this order, before
// a handler runs:
//
//  1. Host (DNS rebinding): the Host header must be exactly "localhost" (ASCII, any case) or
//     a loopback IP literal (127.0.0.0/8 as a canonical dotted quad, or [::1] in brackets,
//     IPv4-mapped forms included), with an optional port 1-65535. Anything else is 403: a
//     name a DNS answer could point at us ("localhost.evil.example", "127.0.0.1.evil.example")
//     and also "localhost." with a trailing dot, "127.1", "0.0.0.0", a zone, an empty Host,
//     "::1" without brackets. Only the exact forms are accepted because a browser always sends
//     them for a loopback URL; nothing legitimate needs the others.
//  2. Origin (cross-site requests): an absent Origin is allowed (CLI clients, and a browser's
//     no-cors GET, which cannot carry the bearer token); "null", an empty value, repeated
//     Origin headers, or one not in AllowedOrigins is 403. AllowedOrigins entries are
//     normalised to what browsers send (lower case, no trailing slash, no default port) and
//     the header must equal one exactly.
//  3. Route: unknown path 404; wrong method 405 with an Allow header. GET routes answer HEAD.
//     A CORS preflight (OPTIONS with Access-Control-Request-Method) from an allowed Origin is
//     answered 204 without auth, since browsers never send credentials in a preflight; allowed
//     origins also get Access-Control-Allow-Origin on responses (no cookies are ever used, so
//     no Allow-Credentials).
//  4. Auth: "Authorization: Bearer <token>", the scheme word in any case (RFC 7235), the token
//     exact, compared in constant time over SHA-256 digests so the length does not leak;
//     else 401 with "WWW-Authenticate: Bearer".
//  5. Body: a request with a body (any Content-Length other than 0, chunked included) must be
//     Content-Type application/json (parameters allowed) else 415, and at most [MaxBodyBytes]
//     else 413 (Content-Length checked up front, then read through http.MaxBytesReader).
//
// Every response carries "Cache-Control: no-store" and "X-Content-Type-Options: nosniff";
// errors are JSON {"error": "..."}. A panicking handler is answered 500 and logged. Each
// request is logged with its method, route, status and duration only: never a header, a
// body, a query string or a token.
//
// Decisions where the SPEC is silent:
//   - POST /v1/session: a body that is not well-formed (not a JSON object, unknown fields,
//     trailing data, a wrong type, a bad expires_at) is 400 and changes nothing; a
//     well-formed body whose access_token or refresh_token is missing, empty or not a usable
//     token (it must be printable ASCII without spaces, as it goes into an HTTP header) is
//     400 and clears the session, as SPEC §8 says. An empty dataset_token means none. A 400
//     names what was wrong (for JSON, the decoder's message); it never echoes a token.
//   - expires_at is an RFC 3339 string or a JSON integer of Unix seconds (1 to year 9999, so
//     milliseconds are refused rather than misread); absent or null means unknown.
//   - A posted session triggers a normal pass (reason "session", due times honoured); POST
//     /v1/retry triggers a forced one (reason "manual"). DELETE /v1/session triggers nothing.
//   - POST /v1/retry takes no body, or the empty object {}.
//   - [Server.Serve] runs the handler with read, write and idle timeouts (slowloris) and
//     64 KiB of headers at most, and shuts down gracefully when its context ends.
//   - GET /v1/status is the StatusSource's JSON object with "version", "uptime_seconds" and
//     "session" {"present", "expires_at" (RFC 3339 or null)} set over it.
//   - A nil SessionControl, RetryControl, PendingSource, Metrics or CAPEM, or an empty
//     ProxyAddr, leaves its routes unregistered (404); a nil StatusSource leaves only the
//     fields above in the status.
//   - /proxy.pac names 127.0.0.1 when the proxy listens on an unspecified address (0.0.0.0,
//     [::] or an empty host): the control endpoint only answers loopback Host names, so its
//     client is on this machine, or behind a port mapping to it. The PAC matches a MITM domain
//     and its subdomains by a dot-boundary suffix test, not dnsDomainIs (a plain suffix test
//     that would also match "evilkancolle-server.com"), and does not fall back to DIRECT.
//   - /ca.pem is served as an attachment named fusou-ca.pem.
//   - control.allow_remote only lifts Listen's address check; the Host check stays, so a
//     remote client is served only through a port mapping or tunnel where it still uses a
//     loopback name (the Docker case: the container listens on 0.0.0.0, the host maps
//     127.0.0.1:8051 to it).
package control

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"
)

// MaxBodyBytes is the largest request body accepted (SPEC §8); larger ones get 413.
const MaxBodyBytes = 64 << 10

// Reasons passed to RetryControl.Trigger.
const (
	ReasonSession = "session" // a session was posted
	ReasonManual  = "manual"  // POST /v1/retry
)

// Session is a session posted to POST /v1/session. It formats and marshals itself with the
// tokens redacted, so a stray %v, %d or zap.Any cannot leak them.
type Session struct {
	AccessToken  string
	RefreshToken string
	DatasetToken string    // empty: none
	ExpiresAt    time.Time // zero: unknown
	// AutoRefresh hands the session over for good: the proxy refreshes it (SPEC §8).
	AutoRefresh bool
}

// SessionInfo describes the held session for GET /v1/status, without its tokens.
type SessionInfo struct {
	Present bool `json:"present"`
	// Kind is "proxy" for a session the proxy owns and refreshes, "caller" for one its
	// caller refreshes and posts again; empty without a session.
	Kind             string     `json:"kind,omitempty"`
	ExpiresAt        *time.Time `json:"expires_at"`                   // the access token's
	DatasetToken     bool       `json:"dataset_token"`                // whether one is held
	DatasetExpiresAt *time.Time `json:"dataset_expires_at,omitempty"` // its exp claim
}

// SessionControl holds the upload session (the assets package implements it).
type SessionControl interface {
	// SetSession replaces the session in memory; it is never written to disk.
	SetSession(s Session)
	// ClearSession forgets the session; uploads stop until a new one is set.
	ClearSession()
	// SessionState describes the held session.
	SessionState() SessionInfo
}

// RetryControl starts retry passes (the retry service implements it).
type RetryControl interface {
	// Trigger asks for a pass; force ignores the entries' due times. It returns at once:
	// started is false when a pass is already running, in which case one more is queued.
	// pass numbers the pass that will serve this trigger, so a client can wait for it.
	Trigger(reason string, force bool) (started bool, pass uint64)
}

// StatusSource supplies the body of GET /v1/status.
type StatusSource interface {
	// Status returns a document that marshals to a JSON object (pending stats, last pass
	// summary, counters). It must hold no secret.
	Status() any
}

// PendingSource lists the pending store for GET /v1/pending.
type PendingSource interface {
	Pending() ([]PendingItem, error)
}

// PendingItem is one pending entry as GET /v1/pending shows it.
type PendingItem struct {
	ID           string `json:"id"`
	Key          string `json:"key"`
	Size         int64  `json:"size"`
	CreatedAt    int64  `json:"created_at"` // Unix seconds
	AttemptCount int    `json:"attempt_count"`
	LastError    string `json:"last_error"`
}

// Options configures a Server. Token is required; see the package comment for what each
// nil field means.
type Options struct {
	Token          string   // bearer token for the authenticated routes; required
	AllowedOrigins []string // browser origins (scheme://host[:port]) allowed to call

	Session SessionControl // POST, DELETE /v1/session
	Retry   RetryControl   // POST /v1/retry, and the pass after a posted session
	Status  StatusSource   // GET /v1/status
	Pending PendingSource  // GET /v1/pending
	Metrics http.Handler   // GET /metrics

	CAPEM     func() ([]byte, error) // GET /ca.pem: the CA certificate in PEM
	ProxyAddr string                 // proxy.listen, for GET /proxy.pac
	MITMHosts []string               // proxy.mitm_hosts, for GET /proxy.pac

	Version string
	Started time.Time // for uptime; zero: when New was called

	Logger *zap.Logger // nil: zap.NewNop()
}

// Server is the control endpoint's http.Handler. It is safe for concurrent use.
type Server struct {
	o         Options
	tokenHash [sha256.Size]byte
	origins   map[string]bool
	routes    map[string]*route
	pac       []byte
	log       *zap.Logger
}

// New checks o and builds the Server.
func New(o Options) (*Server, error) {
	if o.Token == "" {
		return nil, errors.New("control token is empty")
	}
	s := &Server{o: o, tokenHash: sha256.Sum256([]byte(o.Token)), origins: map[string]bool{}, log: o.Logger}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.o.Started.IsZero() {
		s.o.Started = time.Now()
	}
	for _, raw := range o.AllowedOrigins {
		origin, err := normalizeOrigin(raw)
		if err != nil {
			return nil, fmt.Errorf("parse allowed origin %q: %w", raw, err)
		}
		s.origins[origin] = true
	}
	if o.ProxyAddr != "" {
		pac, err := buildPAC(o.ProxyAddr, o.MITMHosts)
		if err != nil {
			return nil, fmt.Errorf("build proxy.pac: %w", err)
		}
		s.pac = pac
	}
	s.routes = s.buildRoutes()
	return s, nil
}

// normalizeOrigin turns an allowed_origins entry into the form a browser sends in Origin.
func normalizeOrigin(raw string) (string, error) {
	u, err := url.Parse(strings.ToLower(strings.TrimSuffix(raw, "/")))
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("want scheme://host[:port] with scheme http or https")
	}
	host := u.Host
	if h, port, err := net.SplitHostPort(host); err == nil &&
		(u.Scheme == "http" && port == "80" || u.Scheme == "https" && port == "443") {
		host = h
		if strings.Contains(h, ":") {
			host = "[" + h + "]"
		}
	}
	return u.Scheme + "://" + host, nil
}

func (s Session) String() string {
	exp := "unknown"
	if !s.ExpiresAt.IsZero() {
		exp = s.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("control.Session{tokens: <redacted>, expires_at: %s}", exp)
}

// Format prints String for every verb, so no verb can reach the token fields.
func (s Session) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// MarshalJSON writes the session with its tokens redacted (zap.Any marshals structs to JSON).
func (s Session) MarshalJSON() ([]byte, error) {
	exp := "null"
	if !s.ExpiresAt.IsZero() {
		exp = `"` + s.ExpiresAt.UTC().Format(time.RFC3339) + `"`
	}
	return []byte(`{"tokens":"<redacted>","expires_at":` + exp + `}`), nil
}
