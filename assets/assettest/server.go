// Package assettest provides an in-process fake of the FUSOU asset-sync API,
// for tests, in the manner of net/http/httptest.
//
// Start one with NewServer or NewTLSServer, point an uploader at
// UploadEndpoint and KeysEndpoint, and use the knobs (AddToken, AddFaults,
// ExpireUploadTokens, ...) and counters (Requests, Uploads, LastHeader, ...)
// to steer and observe it. Every method is safe for concurrent use.
//
// # What it models
//
// The fake follows the real server (packages/FUSOU-WEB, routes/assets.ts and
// utils/upload.ts in github.com/tsukasa-u/FUSOU):
//
//   - One URL serves both upload stages: a POST without X-Upload-Token is the
//     handshake (stage 1), a POST with one is the upload (stage 2). The
//     handshake answers an absolute uploadUrl pointing at that same URL.
//   - Every route wants "Authorization: Bearer <access token>"; a missing or
//     unknown token is a 401 with a JSON {"error","code"} body. At stage 2 the
//     upload token is checked before the bearer token, as the real server does.
//   - Stage 1 reads a JSON body: key and relative_path must be non-empty,
//     without "..", a leading "/" is dropped and "\" becomes "/"; file_size
//     must be a JSON string holding a size in (0, 200 MiB]; content_hash is
//     required; the extension of file_name, key and relative_path must all be
//     in the allow-list (png, jpg, jpeg, gif, webp, bmp, json by default),
//     else 415. A key already stored with the same content_hash is a 409; the
//     same key with a new hash is accepted (a new game version).
//   - The stage-1 answer is {"uploadUrl","token","expiresAt","fields"}. The
//     token is signed (HMAC-SHA256) and carries the key, size and hash. Its
//     lifetime is the real server's: 30 s per MiB plus 300 s, between 60 s
//     and 1 h, unless SetUploadTokenTTL says otherwise.
//   - Stage 2 rejects a bad or expired upload token with 401, hashes the body
//     (SHA-256) and answers 400 when it does not match the handshake's hash;
//     on success it answers 200 {"key","size"}.
//   - X-Dataset-Token (or a "dataset_token" field of the JSON body) is checked
//     at stage 1 only; missing or unknown is a 401. The real server always
//     requires it; the fake only does after SetDatasetTokens.
//   - GET keys accepts since=<ms> (a value that is not a positive integer
//     means a full listing) and answers {"keys","items","total","refreshedAt",
//     "cacheExpiresAt","cached","incremental","snapshotUpperAt",
//     "snapshotUpperMs"}, items newest first, holding only items uploaded
//     after since and at or before snapshotUpperMs.
//
// # Where it differs
//
// SPEC §5 is the client's contract; where it asks for more than the real
// server does, the fake is stricter so that client bugs show up in tests:
//
//   - file_size must be decimal digits (the real server also takes "1e3");
//     content_hash must be 64 lower-case hex digits (the real server only
//     wants it non-empty); content_type must be a non-empty string (the real
//     server ignores it).
//   - Stage 2 wants a Content-Length (411 without one) equal to the size of
//     the handshake (400 otherwise); the real server reads whatever comes.
//   - Stage 2 answers 409 when the (key, hash) was stored meanwhile, as SPEC
//     §5 foresees; the real server overwrites the object and answers 200.
//   - uploadedAt values are made strictly increasing and never at or below a
//     snapshotUpperMs already handed out, so a since cursor never misses an
//     item; the real server takes Date.now() and can race.
//   - The fake keeps only the hash and size of each object unless KeepBytes
//     is on, so a 200 MB upload costs no memory.
//   - There is no R2 bucket, KV cache or D1 table behind it: "cached" is
//     always false and cacheExpiresAt is refreshedAt plus 6 h.
//
// Two things of the real server a client should know, which the fake
// reproduces: its allow-list refuses with 415 everything but images and
// JSON, so a captured .mp4 or .mp3 (SPEC §4 gives them content types) is a
// permanent failure unless FUSOU widens ASSET_SYNC_ALLOWED_EXTENSIONS; and a
// 409 means "this key with this hash", while the same key with a new hash
// is stored again, which SPEC §5's dedupe relies on.
package assettest

import (
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Paths served by the fake, as on fusou.dev.
const (
	UploadPath = "/api/asset-sync/upload"
	KeysPath   = "/api/asset-sync/keys"
)

// AccessToken is the bearer token a new Server accepts.
const AccessToken = "assettest-access-token"

// MaxUploadBytes is the real server's size limit, 200 MiB.
const MaxUploadBytes = 200 << 20

// DefaultAllowedExtensions is the real server's default extension allow-list.
var DefaultAllowedExtensions = []string{"png", "jpg", "jpeg", "gif", "webp", "bmp", "json"}

// Route names one of the fake's three endpoints, for faults and counters.
type Route int

// The routes of the asset-sync API.
const (
	Handshake Route = iota // POST upload without X-Upload-Token (stage 1)
	Upload                 // POST upload with X-Upload-Token (stage 2)
	Keys                   // GET keys
	numRoutes
)

func (r Route) String() string {
	switch r {
	case Handshake:
		return "handshake"
	case Upload:
		return "upload"
	case Keys:
		return "keys"
	}
	return "route(?)"
}

// Object is what the fake stores for one key.
type Object struct {
	Key         string
	ContentHash string
	Size        int64
	UploadedAt  int64  // Unix milliseconds
	Data        []byte // the bytes, only while KeepBytes is on
}

// Server is a fake asset-sync API listening on a loopback address.
type Server struct {
	URL            string // base URL, e.g. http://127.0.0.1:1234
	UploadEndpoint string // URL + UploadPath
	KeysEndpoint   string // URL + KeysPath

	ts        *httptest.Server
	secret    []byte        // signs upload tokens; fixed at start
	quit      chan struct{} // closed by Close, to end fault delays
	closeOnce sync.Once

	mu sync.Mutex // guards every field below

	tokens        map[string]bool // accepted access tokens
	datasetTokens map[string]bool // accepted dataset tokens; empty: not checked
	allowedExt    map[string]bool
	tokenTTL      time.Duration // 0: the real server's size-based lifetime
	relativeURL   bool
	keepBytes     bool
	now           func() time.Time

	objects      map[string]*Object
	lastUploaded int64  // greatest uploadedAt handed out
	tokenSerial  uint64 // serial of the last upload token issued
	validAfter   uint64 // tokens with a serial at or below this are void

	faults    [numRoutes][]Fault
	faultFunc [numRoutes]func(r *http.Request, n int) *Fault

	requests     [numRoutes]int
	lastHeader   [numRoutes]http.Header
	lastURI      [numRoutes]string
	uploads      int
	uploadCounts map[[2]string]int // (key, hash) -> accepted stage-2 uploads
}

// NewServer starts a fake on plain HTTP. Close it when done.
func NewServer() *Server {
	s := newServer()
	s.ts = httptest.NewServer(s)
	s.setURL()
	return s
}

// NewTLSServer starts a fake on HTTPS with httptest's self-signed
// certificate; Client returns a client that trusts it.
func NewTLSServer() *Server {
	s := newServer()
	s.ts = httptest.NewTLSServer(s)
	s.setURL()
	return s
}

func newServer() *Server {
	s := &Server{
		secret:       make([]byte, 32),
		quit:         make(chan struct{}),
		tokens:       map[string]bool{AccessToken: true},
		now:          time.Now,
		objects:      make(map[string]*Object),
		uploadCounts: make(map[[2]string]int),
	}
	rand.Read(s.secret) // never fails (crypto/rand documents it)
	s.setAllowedExtensions(DefaultAllowedExtensions)
	return s
}

func (s *Server) setURL() {
	s.URL = s.ts.URL
	s.UploadEndpoint = s.URL + UploadPath
	s.KeysEndpoint = s.URL + KeysPath
}

// Client returns an HTTP client that trusts the server's certificate (for
// NewTLSServer) and closes its idle connections when the server closes.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Close shuts the server down and waits for requests in flight, as
// httptest.Server.Close does, cutting fault delays short.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.quit) })
	s.ts.Close()
}

// CloseClientConnections closes every connection to the server at once,
// as httptest.Server.CloseClientConnections does.
func (s *Server) CloseClientConnections() { s.ts.CloseClientConnections() }

// AddToken makes tok an accepted bearer token.
func (s *Server) AddToken(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[tok] = true
}

// RevokeToken makes tok a rejected bearer token, as an expired session is.
func (s *Server) RevokeToken(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, tok)
}

// SetDatasetTokens makes stage 1 require one of tokens in X-Dataset-Token
// (or the body's dataset_token), as the real server does. With no tokens
// the check is off, the default.
func (s *Server) SetDatasetTokens(tokens ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.datasetTokens = make(map[string]bool)
	for _, t := range tokens {
		s.datasetTokens[t] = true
	}
}

// SetAllowedExtensions replaces the extension allow-list (lower case,
// without the dot). With none, every upload is refused with 415, as on the
// real server.
func (s *Server) SetAllowedExtensions(exts ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setAllowedExtensions(exts)
}

// setAllowedExtensions replaces the allow-list; mu must be held.
func (s *Server) setAllowedExtensions(exts []string) {
	s.allowedExt = make(map[string]bool)
	for _, e := range exts {
		s.allowedExt[strings.TrimPrefix(strings.ToLower(e), ".")] = true
	}
}

// SetUploadTokenTTL sets the lifetime of upload tokens issued from now on;
// 0 restores the real server's size-based lifetime.
func (s *Server) SetUploadTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenTTL = d
}

// ExpireUploadTokens voids every upload token issued so far, so that the
// next stage 2 with one of them gets a 401.
func (s *Server) ExpireUploadTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.validAfter = s.tokenSerial
}

// SetRelativeUploadURL makes the handshake answer a relative uploadUrl (a
// path) instead of the real server's absolute one.
func (s *Server) SetRelativeUploadURL(relative bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.relativeURL = relative
}

// KeepBytes makes the fake keep the bytes of objects uploaded from now on
// (see Object.Data). Off by default so that large uploads cost no memory.
func (s *Server) KeepBytes(keep bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keepBytes = keep
}

// SetNow replaces the server's clock (nil: time.Now). It decides token
// expiry, uploadedAt and snapshotUpperMs.
func (s *Server) SetNow(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now == nil {
		now = time.Now
	}
	s.now = now
}

// Seed stores an object as if it had been uploaded now, without counting an
// upload.
func (s *Server) Seed(key, hash string, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeLocked(key, hash, size, nil)
}

// storeLocked records an object with a fresh uploadedAt; mu must be held.
func (s *Server) storeLocked(key, hash string, size int64, data []byte) *Object {
	at := s.now().UnixMilli()
	if at <= s.lastUploaded {
		at = s.lastUploaded + 1
	}
	s.lastUploaded = at
	o := &Object{Key: key, ContentHash: hash, Size: size, UploadedAt: at, Data: data}
	s.objects[key] = o
	return o
}

// Object returns a copy of what is stored under key.
func (s *Server) Object(key string) (Object, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return Object{}, false
	}
	return *o, true
}

// Requests reports how many requests reached route, whatever their outcome.
func (s *Server) Requests(route Route) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[route]
}

// TotalRequests reports how many requests reached any route.
func (s *Server) TotalRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.requests {
		n += c
	}
	return n
}

// Uploads reports how many stage-2 uploads were accepted and stored.
func (s *Server) Uploads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uploads
}

// UploadCount reports how many stage-2 uploads of (key, hash) were accepted.
func (s *Server) UploadCount(key, hash string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uploadCounts[[2]string{key, hash}]
}

// LastHeader returns a copy of the headers of the last request on route, or
// nil if none came.
func (s *Server) LastHeader(route Route) http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastHeader[route].Clone()
}

// LastRequestURI returns the request URI (path and query) of the last
// request on route, or "" if none came.
func (s *Server) LastRequestURI(route Route) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastURI[route]
}

// ResetCounters zeroes the request and upload counters and forgets the
// last headers; stored objects stay.
func (s *Server) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = [numRoutes]int{}
	s.lastHeader = [numRoutes]http.Header{}
	s.lastURI = [numRoutes]string{}
	s.uploads = 0
	s.uploadCounts = make(map[[2]string]int)
}

// ServeHTTP routes a request to the handshake, upload or keys handler,
// after counting it and applying any pending fault.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var route Route
	switch r.URL.Path {
	case UploadPath:
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "method not allowed", "")
			return
		}
		route = Handshake
		if r.Header.Get("X-Upload-Token") != "" {
			route = Upload
		}
	case KeysPath:
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "method not allowed", "")
			return
		}
		route = Keys
	default:
		writeError(w, http.StatusNotFound, "not found", "")
		return
	}

	if f := s.begin(route, r); f != nil && s.applyFault(w, r, f) {
		return
	}
	switch route {
	case Handshake:
		s.serveHandshake(w, r)
	case Upload:
		s.serveUpload(w, r)
	case Keys:
		s.serveKeys(w, r)
	}
}

// begin counts the request, keeps its headers and returns the fault to
// apply to it, if any.
func (s *Server) begin(route Route, r *http.Request) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[route]++
	s.lastHeader[route] = r.Header.Clone()
	s.lastURI[route] = r.RequestURI
	if q := s.faults[route]; len(q) > 0 {
		f := q[0]
		s.faults[route] = q[1:]
		return &f
	}
	if fn := s.faultFunc[route]; fn != nil {
		return fn(r, s.requests[route])
	}
	return nil
}

// bearerOK reports whether r carries an accepted bearer token, answering
// 401 when it does not.
func (s *Server) bearerOK(w http.ResponseWriter, r *http.Request) bool {
	tok, ok := bearer(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "bearer token required", "AUTH_MISSING")
		return false
	}
	s.mu.Lock()
	known := s.tokens[tok]
	s.mu.Unlock()
	if !known {
		writeError(w, http.StatusUnauthorized, "bearer token invalid or expired", "AUTH_EXPIRED")
		return false
	}
	return true
}

// bearer extracts the token of an "Authorization: Bearer" header, the
// scheme case-insensitive as on the real server.
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}
