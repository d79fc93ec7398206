package assettest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Paths served by the fake: the asset routes as on fusou.dev, the auth
// routes as on a Supabase project.
const (
	UploadPath = "/api/asset-sync/upload"
	KeysPath   = "/api/asset-sync/keys"
	TokenPath  = "/auth/v1/token"
	JWKSPath   = "/auth/v1/.well-known/jwks.json"
)

// MaxUploadBytes is the real server's size limit, 200 MiB (constants.ts:5).
const MaxUploadBytes = 200 << 20

// DefaultAllowedExtensions is the real server's default extension
// allow-list (constants.ts:59-68).
var DefaultAllowedExtensions = []string{"png", "jpg", "jpeg", "gif", "webp", "bmp", "json"}

// Route names one of the fake's endpoints, for faults and counters.
type Route int

// The routes of the asset-sync API and of Supabase Auth.
const (
	Handshake Route = iota // POST upload without X-Upload-Token (stage 1)
	Upload                 // POST upload with X-Upload-Token (stage 2)
	Keys                   // GET keys
	Refresh                // POST /auth/v1/token (refresh_token grant)
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
	case Refresh:
		return "refresh"
	}
	return "route(?)"
}

// Object is what the fake stores for one key.
type Object struct {
	Key         string
	ContentHash string // "" for an object seeded without one (listed as null)
	Size        int64
	UploadedAt  int64  // Unix milliseconds
	Data        []byte // the bytes, only while KeepBytes is on
}

// Server is a fake asset-sync API and Supabase Auth on a loopback address.
type Server struct {
	URL            string // base URL, e.g. http://127.0.0.1:1234; also the Supabase URL
	UploadEndpoint string // URL + UploadPath
	KeysEndpoint   string // URL + KeysPath

	ts        *httptest.Server
	quit      chan struct{} // closed by Close, to end fault delays
	closeOnce sync.Once

	// Fixed at start.
	uploadSecret  []byte            // signs upload tokens (ASSET_UPLOAD_SIGNING_SECRET)
	datasetSecret []byte            // signs dataset tokens (DATASET_TOKEN_SECRET)
	signKey       *ecdsa.PrivateKey // signs access tokens
	kid           string            // signKey's key ID
	jwksDoc       []byte            // the JWKS document served at JWKSPath
	jwks          []jwk             // jwksDoc read back: the keys access tokens are checked with

	mu sync.Mutex // guards every field below

	allowedExt    map[string]bool
	tokenTTL      time.Duration // 0: the real server's size-based lifetime
	relativeURL   bool
	keepBytes     bool
	keysMode      KeysMode
	now           func() time.Time
	accessTTL     time.Duration
	reuseInterval time.Duration
	revokedAccess map[string]bool          // access tokens refused by RevokeToken
	refreshTokens map[string]*refreshToken // every refresh token handed out
	objects       map[string]*Object
	lastUploaded  int64  // greatest uploadedAt handed out
	tokenSerial   uint64 // serial of the last upload token issued
	validAfter    uint64 // upload tokens with a serial at or below this are void
	faults        [numRoutes][]Fault
	faultFunc     [numRoutes]func(r *http.Request, n int) *Fault
	requests      [numRoutes]int
	lastHeader    [numRoutes]http.Header
	lastURI       [numRoutes]string
	uploads       int
	uploadCounts  map[[2]string]int // (key, hash) -> accepted stage-2 uploads
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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic("assettest: generate signing key: " + err.Error())
	}
	s := &Server{
		quit:          make(chan struct{}),
		uploadSecret:  randomBytes(32),
		datasetSecret: randomBytes(32),
		signKey:       key,
		kid:           hex.EncodeToString(randomBytes(8)),
		now:           time.Now,
		accessTTL:     DefaultAccessTokenTTL,
		reuseInterval: DefaultRefreshReuseInterval,
		revokedAccess: make(map[string]bool),
		refreshTokens: make(map[string]*refreshToken),
		objects:       make(map[string]*Object),
		uploadCounts:  make(map[[2]string]int),
	}
	s.jwksDoc = s.marshalJWKS()
	s.jwks, err = parseJWKS(s.jwksDoc)
	if err != nil {
		panic("assettest: read back the JWKS document: " + err.Error())
	}
	s.setAllowedExtensions(DefaultAllowedExtensions)
	return s
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand documents it)
	return b
}

func (s *Server) setURL() {
	s.URL = s.ts.URL
	s.UploadEndpoint = s.URL + UploadPath
	s.KeysEndpoint = s.URL + KeysPath
}

// SupabaseURL is the Supabase project URL the fake plays: its own URL.
func (s *Server) SupabaseURL() string { return s.URL }

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

// SetAllowedExtensions replaces the extension allow-list (lower case,
// without the dot). With none, every upload is refused with 415, as on the
// real server (utils.ts:700).
func (s *Server) SetAllowedExtensions(exts ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setAllowedExtensions(exts)
}

// setAllowedExtensions replaces the allow-list; mu must be held.
func (s *Server) setAllowedExtensions(exts []string) {
	s.allowedExt = make(map[string]bool)
	for _, e := range exts { // parsed as utils.ts:385-391 parses the setting
		if e = strings.TrimLeft(strings.TrimSpace(strings.ToLower(e)), "."); e != "" {
			s.allowedExt[e] = true
		}
	}
}

// SetUploadTokenTTL sets the lifetime of upload tokens issued from now on
// (whole seconds count, as in a JWT's exp); 0 restores the real server's
// size-based lifetime.
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

// SetNow replaces the server's clock (nil: time.Now). It decides the expiry
// of every token, the times minted into them, the refresh reuse interval,
// uploadedAt and snapshotUpperMs.
func (s *Server) SetNow(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now == nil {
		now = time.Now
	}
	s.now = now
}

// clock reads the server's clock.
func (s *Server) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

// Seed stores an object as if it had been uploaded now, without counting an
// upload. A hash of "" makes an object the listing shows with a null
// contentHash, as rows stored before content_hash existed are.
func (s *Server) Seed(key, hash string, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeLocked(key, hash, size, nil)
}

// storeLocked records an object with a fresh uploadedAt, replacing any
// object under key; mu must be held.
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
// last headers; stored objects and tokens stay.
func (s *Server) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = [numRoutes]int{}
	s.lastHeader = [numRoutes]http.Header{}
	s.lastURI = [numRoutes]string{}
	s.uploads = 0
	s.uploadCounts = make(map[[2]string]int)
}

// ServeHTTP routes a request to its handler, after counting it and applying
// any pending fault. The JWKS document is served uncounted and unfaulted.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions { // the CORS preflight (app.ts:162-168)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var route Route
	switch {
	case r.URL.Path == UploadPath && r.Method == http.MethodPost:
		route = Handshake
		if r.Header.Get("X-Upload-Token") != "" { // upload.ts:82-88
			route = Upload
		}
	case r.URL.Path == KeysPath && r.Method == http.MethodGet:
		route = Keys
	case r.URL.Path == TokenPath && r.Method == http.MethodPost:
		route = Refresh
	case r.URL.Path == JWKSPath && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.jwksDoc)
		return
	default:
		// Hono's catch-all (app.ts:226-228): "error" is a boolean there.
		writeJSON(w, http.StatusNotFound, map[string]any{
			"error": true, "message": "Not found", "path": strings.TrimPrefix(r.URL.Path, "/api"),
		})
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
	case Refresh:
		s.serveRefresh(w, r)
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

// uploadBearer extracts the token of the upload routes' Authorization
// header: "Bearer " exactly, the rest trimmed (upload.ts:47-50).
func uploadBearer(r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tok = strings.TrimSpace(tok)
	return tok, ok && tok != ""
}

// keysBearer extracts the token of the keys route's Authorization header:
// a scheme of any case, then the rest of the words (utils.ts:308-315).
func keysBearer(r *http.Request) (string, bool) {
	f := strings.Fields(r.Header.Get("Authorization"))
	if len(f) < 2 || !strings.EqualFold(f[0], "bearer") {
		return "", false
	}
	return strings.Join(f[1:], " "), true
}
