package control

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const (
	testToken  = "ctl-T0ken-0123456789abcdef"
	testOrigin = "http://localhost:3000"
	goodBody   = `{"access_token":"acc-SECRET-1","refresh_token":"ref-SECRET-2","dataset_token":"ds-SECRET-3"}`
)

// fakeSession records every call; it is the SessionControl of the tests.
type fakeSession struct {
	mu      sync.Mutex
	sets    []Session
	clears  int
	current *Session
}

var _ SessionControl = (*fakeSession)(nil)

func (f *fakeSession) SetSession(s Session) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets = append(f.sets, s)
	f.current = &s
}

func (f *fakeSession) ClearSession() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clears++
	f.current = nil
}

func (f *fakeSession) SessionState() SessionInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.current == nil {
		return SessionInfo{}
	}
	info := SessionInfo{Present: true, Kind: "caller", DatasetToken: f.current.DatasetToken != ""}
	if f.current.AutoRefresh {
		info.Kind = "proxy"
	}
	if exp := f.current.ExpiresAt; !exp.IsZero() {
		info.ExpiresAt = &exp
	}
	return info
}

func (f *fakeSession) calls() (sets []Session, clears int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Session(nil), f.sets...), f.clears
}

type trigger struct {
	reason string
	force  bool
}

// fakeRetry records triggers and answers started.
type fakeRetry struct {
	mu       sync.Mutex
	triggers []trigger
	started  bool
}

var _ RetryControl = (*fakeRetry)(nil)

func (f *fakeRetry) Trigger(reason string, force bool) (bool, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.triggers = append(f.triggers, trigger{reason, force})
	return f.started, uint64(len(f.triggers))
}

func (f *fakeRetry) calls() []trigger {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]trigger(nil), f.triggers...)
}

// fixture is a Server wired to fakes, with its log lines observed.
type fixture struct {
	srv     *Server
	session *fakeSession
	retry   *fakeRetry
	logs    *observer.ObservedLogs
}

func newFixture(t testing.TB, edit func(*Options)) *fixture {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	f := &fixture{session: &fakeSession{}, retry: &fakeRetry{started: true}, logs: logs}
	o := Options{
		Token:          testToken,
		AllowedOrigins: []string{testOrigin + "/"},
		Session:        f.session,
		Retry:          f.retry,
		Version:        "v1.2.3-test",
		Logger:         zap.New(core),
	}
	if edit != nil {
		edit(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.srv = srv
	return f
}

// newReq builds a request that passes every check: a loopback Host, the token, and the
// JSON content type when there is a body.
func newReq(method, path, body string) *http.Request {
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, path, nil)
	} else {
		r = httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
	}
	r.Host = "127.0.0.1:8051"
	r.Header.Set("Authorization", "Bearer "+testToken)
	return r
}

func (f *fixture) do(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, r)
	return w
}

// wantJSONError checks the status and that the body is {"error": "<something>"}.
func wantJSONError(t *testing.T, w *httptest.ResponseRecorder, status int) string {
	t.Helper()
	if w.Code != status {
		t.Errorf("status = %d, want %d (body %q)", w.Code, status, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body["error"] == "" || len(body) != 1 {
		t.Errorf("body = %q, want {\"error\": \"...\"}", w.Body.String())
	}
	return body["error"]
}

// The control security table: each request differs from a good POST /v1/session in one
// way. A refused one gets its status and a JSON error and changes nothing; an accepted one
// sets the session and triggers one pass.
func TestSecurityTable(t *testing.T) {
	oneMB := `{"access_token":"` + strings.Repeat("a", 1<<20) + `","refresh_token":"r"}`
	cases := []struct {
		name   string
		edit   func(r *http.Request)
		method string // default POST
		path   string // default /v1/session
		body   string // default goodBody
		want   int
	}{
		{name: "good request", want: http.StatusNoContent},

		// Authorization.
		{name: "missing token", edit: func(r *http.Request) { r.Header.Del("Authorization") }, want: 401},
		{name: "wrong token", edit: setHeader("Authorization", "Bearer wrong-token-0123456789"), want: 401},
		{name: "token in upper case", edit: setHeader("Authorization", "Bearer "+strings.ToUpper(testToken)), want: 401},
		{name: "token prefix", edit: setHeader("Authorization", "Bearer "+testToken[:len(testToken)-1]), want: 401},
		{name: "token with suffix", edit: setHeader("Authorization", "Bearer "+testToken+"x"), want: 401},
		{name: "token without scheme", edit: setHeader("Authorization", testToken), want: 401},
		{name: "basic scheme", edit: setHeader("Authorization", "Basic "+testToken), want: 401},
		{name: "empty bearer", edit: setHeader("Authorization", "Bearer "), want: 401},
		{name: "two authorization headers", edit: addHeader("Authorization", "Bearer "+testToken), want: 401},
		{name: "bearer scheme lower case", edit: setHeader("Authorization", "bearer "+testToken), want: 204},
		{name: "BEARER scheme upper case", edit: setHeader("Authorization", "BEARER "+testToken), want: 204},
		{name: "two spaces after scheme", edit: setHeader("Authorization", "Bearer  "+testToken), want: 204},

		// Host (DNS rebinding).
		{name: "host evil.example", edit: setHost("evil.example"), want: 403},
		{name: "host evil.example with port", edit: setHost("evil.example:8051"), want: 403},
		{name: "host 127.0.0.1.evil.example", edit: setHost("127.0.0.1.evil.example:8051"), want: 403},
		{name: "host localhost.evil.example", edit: setHost("localhost.evil.example:8051"), want: 403},
		{name: "host foo.localhost", edit: setHost("foo.localhost:8051"), want: 403},
		{name: "host localhost trailing dot", edit: setHost("localhost."), want: 403},
		{name: "host localhost trailing dot with port", edit: setHost("localhost.:8051"), want: 403},
		{name: "host 127.0.0.1 trailing dot", edit: setHost("127.0.0.1.:8051"), want: 403},
		{name: "host unicode look-alike", edit: setHost("localhoſt:8051"), want: 403},
		{name: "host 127.1", edit: setHost("127.1:8051"), want: 403},
		{name: "host decimal 127.0.0.1", edit: setHost("2130706433:8051"), want: 403},
		{name: "host octal 127.0.0.1", edit: setHost("0177.0.0.1:8051"), want: 403},
		{name: "host 0.0.0.0", edit: setHost("0.0.0.0:8051"), want: 403},
		{name: "host private address", edit: setHost("192.168.1.5:8051"), want: 403},
		{name: "host empty", edit: setHost(""), want: 403},
		{name: "host ::1 without brackets", edit: setHost("::1"), want: 403},
		{name: "host bracketed IPv4", edit: setHost("[127.0.0.1]:8051"), want: 403},
		{name: "host bracketed localhost", edit: setHost("[localhost]:8051"), want: 403},
		{name: "host IPv6 with zone", edit: setHost("[::1%25lo]:8051"), want: 403},
		{name: "host port 0", edit: setHost("localhost:0"), want: 403},
		{name: "host port too big", edit: setHost("localhost:65536"), want: 403},
		{name: "host port not a number", edit: setHost("localhost:http"), want: 403},
		{name: "host empty port", edit: setHost("localhost:"), want: 403},
		{name: "host two ports", edit: setHost("127.0.0.1:8051:8051"), want: 403},
		{name: "host [::1]:8051", edit: setHost("[::1]:8051"), want: 204},
		{name: "host [::1]", edit: setHost("[::1]"), want: 204},
		{name: "host localhost:8051", edit: setHost("localhost:8051"), want: 204},
		{name: "host LOCALHOST:8051", edit: setHost("LOCALHOST:8051"), want: 204},
		{name: "host localhost", edit: setHost("localhost"), want: 204},
		{name: "host 127.0.0.2", edit: setHost("127.0.0.2:8051"), want: 204},
		{name: "host IPv4-mapped loopback", edit: setHost("[::ffff:127.0.0.1]:8051"), want: 204},

		// Origin (cross-site requests).
		{name: "foreign origin", edit: setHeader("Origin", "https://evil.example"), want: 403},
		{name: "origin null", edit: setHeader("Origin", "null"), want: 403},
		{name: "origin empty", edit: setHeader("Origin", ""), want: 403},
		{name: "allowed origin other port", edit: setHeader("Origin", "http://localhost:3001"), want: 403},
		{name: "allowed origin other scheme", edit: setHeader("Origin", "https://localhost:3000"), want: 403},
		{name: "allowed origin with path", edit: setHeader("Origin", testOrigin+"/"), want: 403},
		{name: "allowed origin twice", edit: func(r *http.Request) { r.Header["Origin"] = []string{testOrigin, testOrigin} }, want: 403},
		{name: "foreign origin on a public route", path: "/healthz", method: "GET", body: "-", edit: setHeader("Origin", "https://evil.example"), want: 403},
		{name: "allowed origin", edit: setHeader("Origin", testOrigin), want: 204},

		// Bodies.
		{name: "1 MB body", body: oneMB, want: 413},
		{name: "1 MB chunked body", body: oneMB, edit: func(r *http.Request) { r.ContentLength = -1 }, want: 413},
		{name: "no content type", edit: func(r *http.Request) { r.Header.Del("Content-Type") }, want: 415},
		{name: "text/plain", edit: setHeader("Content-Type", "text/plain"), want: 415},
		{name: "form", edit: setHeader("Content-Type", "application/x-www-form-urlencoded"), want: 415},
		{name: "multipart", edit: setHeader("Content-Type", "multipart/form-data; boundary=x"), want: 415},
		{name: "json look-alike", edit: setHeader("Content-Type", "application/jsonp"), want: 415},
		{name: "json with charset", edit: setHeader("Content-Type", "application/json; charset=utf-8"), want: 204},
		{name: "non-JSON body", body: "access_token=a&refresh_token=b", want: 400},
		{name: "malformed JSON", body: `{"access_token":"a","refresh_token":`, want: 400},
		{name: "unknown field", body: `{"access_token":"a","refresh_token":"b","admin":true}`, want: 400},
		{name: "trailing data", body: goodBody + `{}`, want: 400},
		{name: "array", body: `[` + goodBody + `]`, want: 400},
		{name: "null", body: `null`, want: 400},
		{name: "token of wrong type", body: `{"access_token":1,"refresh_token":"b"}`, want: 400},
		{name: "bad expires_at", body: `{"access_token":"a","refresh_token":"b","expires_at":"tomorrow"}`, want: 400},
		{name: "bad dataset_token", body: `{"access_token":"a","refresh_token":"b","dataset_token":"x y"}`, want: 400},

		// Routing.
		{name: "GET on a POST route", method: "GET", body: "-", want: 405},
		{name: "PUT on the session route", method: "PUT", want: 405},
		{name: "unknown route", path: "/v1/sessions", want: 404},
		{name: "trailing slash", path: "/v1/session/", want: 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nil)
			method, path, body := c.method, c.path, c.body
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/v1/session"
			}
			switch body {
			case "":
				body = goodBody
			case "-":
				body = ""
			}
			r := newReq(method, path, body)
			if c.edit != nil {
				c.edit(r)
			}
			w := f.do(r)
			sets, clears := f.session.calls()
			triggers := f.retry.calls()
			if c.want == http.StatusNoContent {
				if w.Code != c.want {
					t.Fatalf("status = %d, want %d (body %q)", w.Code, c.want, w.Body.String())
				}
				if len(sets) != 1 || clears != 0 || len(triggers) != 1 {
					t.Errorf("calls: %d sets, %d clears, %d triggers; want 1, 0, 1", len(sets), clears, len(triggers))
				}
				return
			}
			wantJSONError(t, w, c.want)
			if len(sets) != 0 || clears != 0 || len(triggers) != 0 {
				t.Errorf("refused request changed state: %d sets, %d clears, %d triggers", len(sets), clears, len(triggers))
			}
			switch c.want {
			case 401:
				if got := w.Header().Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("WWW-Authenticate = %q, want Bearer", got)
				}
			case 405:
				if got := w.Header().Get("Allow"); got != "DELETE, POST" {
					t.Errorf("Allow = %q, want %q", got, "DELETE, POST")
				}
			}
			if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", cc)
			}
		})
	}
}

func setHeader(k, v string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set(k, v) }
}

func addHeader(k, v string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Add(k, v) }
}

func setHost(h string) func(*http.Request) {
	return func(r *http.Request) { r.Host = h }
}

// A Content-Length over the limit is refused before a byte of the body is read.
func TestOversizedContentLengthNotRead(t *testing.T) {
	f := newFixture(t, nil)
	r := newReq(http.MethodPost, "/v1/session", goodBody)
	body := &countingReader{r: strings.NewReader(goodBody)}
	r.Body = io.NopCloser(body)
	r.ContentLength = MaxBodyBytes + 1
	wantJSONError(t, f.do(r), http.StatusRequestEntityTooLarge)
	if body.n != 0 {
		t.Errorf("read %d bytes of a body refused by its Content-Length", body.n)
	}

	// Exactly MaxBodyBytes is allowed (padded with JSON whitespace).
	f = newFixture(t, nil)
	exact := goodBody + strings.Repeat(" ", MaxBodyBytes-len(goodBody))
	if w := f.do(newReq(http.MethodPost, "/v1/session", exact)); w.Code != http.StatusNoContent {
		t.Errorf("a body of exactly MaxBodyBytes: %d, want 204", w.Code)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// Every authenticated route answers no-store, whether it succeeds or refuses.
func TestAuthenticatedRoutesNoStore(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.Pending = pendingFunc(func() ([]PendingItem, error) { return nil, nil })
		o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "m 1\n") })
	})
	routes := []struct{ method, path, body string }{
		{"POST", "/v1/session", goodBody},
		{"DELETE", "/v1/session", ""},
		{"POST", "/v1/retry", ""},
		{"GET", "/v1/status", ""},
		{"GET", "/v1/pending", ""},
		{"GET", "/metrics", ""},
	}
	for _, rt := range routes {
		for _, auth := range []bool{true, false} {
			r := newReq(rt.method, rt.path, rt.body)
			if !auth {
				r.Header.Del("Authorization")
			}
			w := f.do(r)
			if auth == (w.Code == http.StatusUnauthorized) || w.Code >= 500 {
				t.Errorf("%s %s auth=%v: status %d", rt.method, rt.path, auth, w.Code)
			}
			if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("%s %s auth=%v: Cache-Control = %q, want no-store", rt.method, rt.path, auth, cc)
			}
		}
	}
}

// A CORS preflight from an allowed origin is answered without the token, since browsers
// never send one; a foreign origin's is refused; real responses name the allowed origin.
func TestCORS(t *testing.T) {
	f := newFixture(t, nil)
	pre := newReq(http.MethodOptions, "/v1/session", "")
	pre.Header.Del("Authorization")
	pre.Header.Set("Origin", testOrigin)
	pre.Header.Set("Access-Control-Request-Method", "POST")
	pre.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	pre.Header.Set("Access-Control-Request-Private-Network", "true")
	w := f.do(pre)
	if w.Code != http.StatusNoContent {
		t.Fatalf("preflight status = %d, want 204", w.Code)
	}
	for k, want := range map[string]string{
		"Access-Control-Allow-Origin":          testOrigin,
		"Access-Control-Allow-Methods":         "DELETE, POST",
		"Access-Control-Allow-Headers":         "Authorization, Content-Type",
		"Access-Control-Allow-Private-Network": "true",
	} {
		if got := w.Header().Get(k); got != want {
			t.Errorf("preflight %s = %q, want %q", k, got, want)
		}
	}
	if sets, clears := f.session.calls(); len(sets)+clears != 0 {
		t.Error("preflight changed the session")
	}

	pre.Header.Set("Origin", "https://evil.example")
	wantJSONError(t, f.do(pre), http.StatusForbidden)

	// OPTIONS without Origin is no preflight: the route has no OPTIONS handler.
	plain := newReq(http.MethodOptions, "/v1/session", "")
	wantJSONError(t, f.do(plain), http.StatusMethodNotAllowed)

	r := newReq(http.MethodGet, "/v1/status", "")
	r.Header.Set("Origin", testOrigin)
	w = f.do(r)
	if w.Code != 200 || w.Header().Get("Access-Control-Allow-Origin") != testOrigin {
		t.Errorf("status from allowed origin: %d, Access-Control-Allow-Origin %q", w.Code, w.Header().Get("Access-Control-Allow-Origin"))
	}
	r.Header.Del("Origin")
	if got := f.do(r).Header().Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("Access-Control-Allow-Origin without Origin = %q, want none", got)
	}
}

// A panicking handler is answered 500 with a JSON error, and logged.
func TestPanicRecovered(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.Pending = pendingFunc(func() ([]PendingItem, error) { panic("boom") })
	})
	w := f.do(newReq(http.MethodGet, "/v1/pending", ""))
	wantJSONError(t, w, http.StatusInternalServerError)
	if n := f.logs.FilterMessage("control handler panicked").Len(); n != 1 {
		t.Errorf("%d panic log lines, want 1", n)
	}
	// The server still serves.
	if w := f.do(newReq(http.MethodGet, "/healthz", "")); w.Code != 200 {
		t.Errorf("healthz after panic: %d", w.Code)
	}
}

// No token (control or session) reaches the logs, whatever the request's fate.
func TestLogsHoldNoSecret(t *testing.T) {
	f := newFixture(t, nil)
	reqs := []*http.Request{
		newReq(http.MethodPost, "/v1/session", goodBody),
		newReq(http.MethodPost, "/v1/session", `{"access_token":"acc-SECRET-1","refresh_token":""}`),
		newReq(http.MethodPost, "/v1/session", `{"access_token":"acc-SECRET-1","refresh_token":"ref-SECRET-2","bogus":"x"}`),
		newReq(http.MethodGet, "/v1/status?token=acc-SECRET-1", ""),
		newReq(http.MethodGet, "/nope/acc-SECRET-1", ""),
	}
	wrong := newReq(http.MethodPost, "/v1/session", goodBody)
	wrong.Header.Set("Authorization", "Bearer acc-SECRET-1")
	reqs = append(reqs, wrong)
	for _, r := range reqs {
		f.do(r)
	}
	if f.logs.Len() == 0 {
		t.Fatal("no log lines at all")
	}
	for _, e := range f.logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + strings.ReplaceAll(strings.TrimSpace(fmtAny(v)), "\n", " ")
		}
		for _, secret := range []string{testToken, "SECRET"} {
			if strings.Contains(line, secret) {
				t.Errorf("log line holds a secret: %s", line)
			}
		}
	}
}

func fmtAny(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

type pendingFunc func() ([]PendingItem, error)

func (f pendingFunc) Pending() ([]PendingItem, error) { return f() }

type statusFunc func() any

func (f statusFunc) Status() any { return f() }
