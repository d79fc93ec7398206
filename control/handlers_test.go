package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPostSessionSets(t *testing.T) {
	exp := time.Date(2036, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name    string
		expires string // the expires_at member, "" for none
		want    time.Time
	}{
		{"no expiry", "", time.Time{}},
		{"null expiry", `,"expires_at":null`, time.Time{}},
		{"RFC 3339 UTC", `,"expires_at":"2036-01-02T03:04:05Z"`, exp},
		{"RFC 3339 with offset", `,"expires_at":"2036-01-02T12:04:05+09:00"`, exp},
		{"Unix seconds", fmt.Sprintf(`,"expires_at":%d`, exp.Unix()), exp},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nil)
			body := `{"access_token":"acc","refresh_token":"ref"` + c.expires + `}`
			w := f.do(newReq(http.MethodPost, "/v1/session", body))
			if w.Code != http.StatusNoContent || w.Body.Len() != 0 {
				t.Fatalf("status %d body %q, want 204 and no body", w.Code, w.Body.String())
			}
			sets, clears := f.session.calls()
			if len(sets) != 1 || clears != 0 {
				t.Fatalf("%d sets, %d clears; want 1, 0", len(sets), clears)
			}
			got := sets[0]
			if got.AccessToken != "acc" || got.RefreshToken != "ref" || got.DatasetToken != "" || !got.ExpiresAt.Equal(c.want) {
				t.Errorf("set %+v / %q %q %q, want acc ref \"\" %v", got, got.AccessToken, got.RefreshToken, got.DatasetToken, c.want)
			}
			if tr := f.retry.calls(); len(tr) != 1 || tr[0] != (trigger{ReasonSession, false}) {
				t.Errorf("triggers = %v, want one {session false}", tr)
			}
		})
	}
}

func TestPostSessionDatasetToken(t *testing.T) {
	f := newFixture(t, nil)
	if w := f.do(newReq(http.MethodPost, "/v1/session", goodBody)); w.Code != http.StatusNoContent {
		t.Fatalf("status %d", w.Code)
	}
	sets, _ := f.session.calls()
	if len(sets) != 1 || sets[0].AccessToken != "acc-SECRET-1" || sets[0].RefreshToken != "ref-SECRET-2" || sets[0].DatasetToken != "ds-SECRET-3" {
		t.Errorf("sets = %d, want the three posted tokens", len(sets))
	}
}

// A well-formed session without both usable tokens is 400 and clears the session.
func TestPostSessionWithoutTokensClears(t *testing.T) {
	bodies := map[string]string{
		"empty tokens":          `{"access_token":"","refresh_token":""}`,
		"empty object":          `{}`,
		"no refresh_token":      `{"access_token":"acc"}`,
		"no access_token":       `{"refresh_token":"ref","dataset_token":"ds"}`,
		"null access_token":     `{"access_token":null,"refresh_token":"ref"}`,
		"space in access_token": `{"access_token":"a b","refresh_token":"ref"}`,
		"newline in token":      `{"access_token":"acc","refresh_token":"r\r\nX-Evil: 1"}`,
		"non-ASCII token":       `{"access_token":"acc","refresh_token":"réf"}`,
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.session.SetSession(Session{AccessToken: "old", RefreshToken: "old"})
			w := f.do(newReq(http.MethodPost, "/v1/session", body))
			wantJSONError(t, w, http.StatusBadRequest)
			sets, clears := f.session.calls()
			if len(sets) != 1 || clears != 1 {
				t.Errorf("%d sets, %d clears; want only the setup's set, and 1 clear", len(sets), clears)
			}
			if f.session.SessionState().Present {
				t.Error("session still present")
			}
			if tr := f.retry.calls(); len(tr) != 0 {
				t.Errorf("triggers = %v, want none", tr)
			}
		})
	}
}

// An expires_at that is neither RFC 3339 nor Unix seconds is a malformed request: 400, and
// the session is left alone.
func TestPostSessionBadExpiry(t *testing.T) {
	for _, v := range []string{`"tomorrow"`, `""`, `"2026-01-02"`, `1767323045000`, `1.5`, `-1`, `0`, `true`, `{}`} {
		t.Run(v, func(t *testing.T) {
			f := newFixture(t, nil)
			w := f.do(newReq(http.MethodPost, "/v1/session", `{"access_token":"a","refresh_token":"b","expires_at":`+v+`}`))
			if msg := wantJSONError(t, w, http.StatusBadRequest); !strings.Contains(msg, "expires_at") {
				t.Errorf("error %q does not name expires_at", msg)
			}
			if sets, clears := f.session.calls(); len(sets)+clears != 0 {
				t.Errorf("%d sets, %d clears; want none", len(sets), clears)
			}
		})
	}
}

func TestDeleteSession(t *testing.T) {
	f := newFixture(t, nil)
	f.do(newReq(http.MethodPost, "/v1/session", goodBody))
	w := f.do(newReq(http.MethodDelete, "/v1/session", ""))
	if w.Code != http.StatusNoContent {
		t.Fatalf("status %d, want 204", w.Code)
	}
	if _, clears := f.session.calls(); clears != 1 {
		t.Errorf("%d clears, want 1", clears)
	}
	if f.session.SessionState().Present {
		t.Error("session still present")
	}
	if tr := f.retry.calls(); len(tr) != 1 {
		t.Errorf("triggers = %v, want only the POST's", tr)
	}
}

func TestRetry(t *testing.T) {
	for _, started := range []bool{true, false} {
		for _, body := range []string{"", "{}", " {}\n"} {
			t.Run(fmt.Sprintf("started=%v body=%q", started, body), func(t *testing.T) {
				f := newFixture(t, nil)
				f.retry.started = started
				w := f.do(newReq(http.MethodPost, "/v1/retry", body))
				if w.Code != http.StatusAccepted {
					t.Fatalf("status %d, want 202", w.Code)
				}
				var got map[string]any
				if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || len(got) != 2 || got["started"] != started || got["pass"] != 1.0 {
					t.Errorf("body %q, want {\"started\":%v,\"pass\":1}", w.Body.String(), started)
				}
				if tr := f.retry.calls(); len(tr) != 1 || tr[0] != (trigger{ReasonManual, true}) {
					t.Errorf("triggers = %v, want one forced {manual true}", tr)
				}
			})
		}
	}
	for _, body := range []string{`{"force":true}`, `[]`, `null`, `{}{}`} {
		t.Run("refused "+body, func(t *testing.T) {
			f := newFixture(t, nil)
			wantJSONError(t, f.do(newReq(http.MethodPost, "/v1/retry", body)), http.StatusBadRequest)
			if tr := f.retry.calls(); len(tr) != 0 {
				t.Errorf("triggers = %v, want none", tr)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	exp := time.Date(2036, 5, 6, 7, 8, 9, 0, time.UTC)
	f := newFixture(t, func(o *Options) {
		o.Started = time.Now().Add(-90 * time.Second)
		o.Status = statusFunc(func() any {
			return map[string]any{
				"pending": map[string]int{"count": 3, "bytes": 300},
				"version": "a source cannot override this",
			}
		})
	})
	body := fmt.Sprintf(`{"access_token":"acc-SECRET-1","refresh_token":"ref-SECRET-2","dataset_token":"ds-SECRET-3","expires_at":%d}`, exp.Unix())
	if w := f.do(newReq(http.MethodPost, "/v1/session", body)); w.Code != http.StatusNoContent {
		t.Fatalf("set session: %d", w.Code)
	}
	w := f.do(newReq(http.MethodGet, "/v1/status", ""))
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q", w.Code, w.Header().Get("Content-Type"))
	}
	for _, secret := range []string{"SECRET", testToken} {
		if strings.Contains(w.Body.String(), secret) {
			t.Errorf("status holds a secret: %s", w.Body.String())
		}
	}
	var got struct {
		Version string         `json:"version"`
		Uptime  int64          `json:"uptime_seconds"`
		Pending map[string]int `json:"pending"`
		Session struct {
			Present   bool       `json:"present"`
			ExpiresAt *time.Time `json:"expires_at"`
		} `json:"session"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("decode %q: %v", w.Body.String(), err)
	}
	if got.Version != "v1.2.3-test" {
		t.Errorf("version = %q", got.Version)
	}
	if got.Uptime < 90 || got.Uptime > 3600 {
		t.Errorf("uptime_seconds = %d, want about 90", got.Uptime)
	}
	if got.Pending["count"] != 3 || got.Pending["bytes"] != 300 {
		t.Errorf("pending = %v, want the source's", got.Pending)
	}
	if !got.Session.Present || got.Session.ExpiresAt == nil || !got.Session.ExpiresAt.Equal(exp) {
		t.Errorf("session = %+v, want present, expiring %v", got.Session, exp)
	}

	f.do(newReq(http.MethodDelete, "/v1/session", ""))
	w = f.do(newReq(http.MethodGet, "/v1/status", ""))
	if !strings.Contains(w.Body.String(), `"session":{"present":false,"expires_at":null,"dataset_token":false}`) {
		t.Errorf("status after DELETE = %s", w.Body.String())
	}
}

func TestStatusSourceFailures(t *testing.T) {
	for name, doc := range map[string]any{
		"not an object":   []int{1, 2},
		"not marshalable": map[string]any{"ch": make(chan int)},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, func(o *Options) { o.Status = statusFunc(func() any { return doc }) })
			wantJSONError(t, f.do(newReq(http.MethodGet, "/v1/status", "")), http.StatusInternalServerError)
		})
	}
	t.Run("nil source and null document", func(t *testing.T) {
		for _, st := range []StatusSource{nil, statusFunc(func() any { return nil })} {
			f := newFixture(t, func(o *Options) { o.Status = st; o.Session = nil })
			w := f.do(newReq(http.MethodGet, "/v1/status", ""))
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); w.Code != 200 || err != nil || len(got) != 3 {
				t.Errorf("status %d body %s, want version, uptime_seconds and session only", w.Code, w.Body.String())
			}
		}
	})
}

func TestPending(t *testing.T) {
	items := []PendingItem{{ID: "id-1", Key: "assets/kcs2/a.png", Size: 12, CreatedAt: 1764633600, AttemptCount: 2, LastError: "server 503"}}
	f := newFixture(t, func(o *Options) { o.Pending = pendingFunc(func() ([]PendingItem, error) { return items, nil }) })
	w := f.do(newReq(http.MethodGet, "/v1/pending", ""))
	want := `{"entries":[{"id":"id-1","key":"assets/kcs2/a.png","size":12,"created_at":1764633600,"attempt_count":2,"last_error":"server 503"}]}` + "\n"
	if w.Code != 200 || w.Body.String() != want {
		t.Errorf("got %d %s\nwant 200 %s", w.Code, w.Body.String(), want)
	}

	f = newFixture(t, func(o *Options) { o.Pending = pendingFunc(func() ([]PendingItem, error) { return nil, nil }) })
	if w := f.do(newReq(http.MethodGet, "/v1/pending", "")); w.Body.String() != `{"entries":[]}`+"\n" {
		t.Errorf("empty store: %s", w.Body.String())
	}

	f = newFixture(t, func(o *Options) {
		o.Pending = pendingFunc(func() ([]PendingItem, error) { return nil, errors.New("open /secret/path: denied") })
	})
	w = f.do(newReq(http.MethodGet, "/v1/pending", ""))
	if msg := wantJSONError(t, w, http.StatusInternalServerError); strings.Contains(msg, "/secret/path") {
		t.Errorf("error %q exposes the internal error", msg)
	}
	if f.logs.FilterMessage("list pending entries").Len() != 1 {
		t.Error("the failure was not logged")
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = io.WriteString(w, "fusou_test_total 7\n")
		})
	})
	w := f.do(newReq(http.MethodGet, "/metrics", ""))
	if w.Code != 200 || w.Body.String() != "fusou_test_total 7\n" || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("got %d %q, Cache-Control %q", w.Code, w.Body.String(), w.Header().Get("Cache-Control"))
	}
	r := newReq(http.MethodGet, "/metrics", "")
	r.Header.Del("Authorization")
	wantJSONError(t, f.do(r), http.StatusUnauthorized)
}

func TestPublicRoutes(t *testing.T) {
	pem := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	f := newFixture(t, func(o *Options) {
		o.CAPEM = func() ([]byte, error) { return pem, nil }
		o.ProxyAddr = "127.0.0.1:8050"
		o.MITMHosts = []string{"kancolle-server.com"}
	})
	cases := []struct{ path, ctype, body string }{
		{"/healthz", "text/plain; charset=utf-8", "ok"},
		{"/ca.pem", "application/x-pem-file", string(pem)},
		{"/proxy.pac", "application/x-ns-proxy-autoconfig", "function FindProxyForURL("},
	}
	for _, c := range cases {
		r := newReq(http.MethodGet, c.path, "")
		r.Header.Del("Authorization")
		w := f.do(r)
		if w.Code != 200 || w.Header().Get("Content-Type") != c.ctype || !strings.Contains(w.Body.String(), c.body) {
			t.Errorf("GET %s: %d %q %q", c.path, w.Code, w.Header().Get("Content-Type"), w.Body.String())
		}
		if c.path == "/healthz" && w.Body.String() != "ok" {
			t.Errorf("healthz body %q, want ok", w.Body.String())
		}
		r.Method = http.MethodHead
		if w := f.do(r); w.Code != 200 {
			t.Errorf("HEAD %s: %d", c.path, w.Code)
		}
		r.Method = http.MethodPost
		wantJSONError(t, f.do(r), http.StatusMethodNotAllowed)
	}
	if got := f.do(newReq(http.MethodGet, "/ca.pem", "")).Header().Get("Content-Disposition"); got != `attachment; filename="fusou-ca.pem"` {
		t.Errorf("ca.pem Content-Disposition = %q", got)
	}
}

// A missing backend leaves its routes unregistered; a failing CA read is 500.
func TestOptionalRoutes(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Session, o.Retry = nil, nil })
	for _, p := range []string{"/v1/session", "/v1/retry", "/v1/pending", "/metrics", "/ca.pem", "/proxy.pac"} {
		wantJSONError(t, f.do(newReq(http.MethodGet, p, "")), http.StatusNotFound)
	}
	f = newFixture(t, func(o *Options) { o.CAPEM = func() ([]byte, error) { return nil, errors.New("no CA") } })
	wantJSONError(t, f.do(newReq(http.MethodGet, "/ca.pem", "")), http.StatusInternalServerError)

	// A session can be set without a retry service; nothing is triggered.
	f = newFixture(t, func(o *Options) { o.Retry = nil })
	if w := f.do(newReq(http.MethodPost, "/v1/session", goodBody)); w.Code != http.StatusNoContent {
		t.Errorf("session without retry: %d", w.Code)
	}
}

func TestNewRefuses(t *testing.T) {
	cases := map[string]Options{
		"empty token":          {},
		"origin with path":     {Token: testToken, AllowedOrigins: []string{"http://localhost:3000/app"}},
		"origin without host":  {Token: testToken, AllowedOrigins: []string{"localhost:3000"}},
		"origin ftp":           {Token: testToken, AllowedOrigins: []string{"ftp://localhost"}},
		"origin with userinfo": {Token: testToken, AllowedOrigins: []string{"http://u@localhost"}},
		"proxy addr no port":   {Token: testToken, ProxyAddr: "127.0.0.1"},
	}
	for name, o := range cases {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestNormalizeOrigin(t *testing.T) {
	cases := map[string]string{
		"http://localhost:3000":   "http://localhost:3000",
		"HTTP://LocalHost:3000/":  "http://localhost:3000",
		"https://fusou.dev:443":   "https://fusou.dev",
		"http://fusou.dev:80/":    "http://fusou.dev",
		"http://fusou.dev:443":    "http://fusou.dev:443",
		"http://[::1]:80":         "http://[::1]",
		"https://[::1]:8443":      "https://[::1]:8443",
		"https://app.fusou.dev":   "https://app.fusou.dev",
		"http://127.0.0.1:5173/":  "http://127.0.0.1:5173",
		"https://FUSOU.dev:8443/": "https://fusou.dev:8443",
	}
	for in, want := range cases {
		if got, err := normalizeOrigin(in); err != nil || got != want {
			t.Errorf("normalizeOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// Session never prints or marshals its tokens, whatever the verb.
func TestSessionRedacts(t *testing.T) {
	s := Session{AccessToken: "acc-SECRET", RefreshToken: "ref-SECRET", DatasetToken: "ds-SECRET", ExpiresAt: time.Unix(1767323045, 0)}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, &s))
	}
	outs = append(outs, s.String(), fmt.Sprint([]Session{s}), fmt.Sprintf("%v", map[string]Session{"k": s}))
	b, err := json.Marshal(struct{ S Session }{s})
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(b))
	for _, out := range outs {
		if strings.Contains(out, "SECRET") {
			t.Errorf("leaks a token: %s", out)
		}
	}
	if !strings.Contains(string(b), "2026-01-02T03:04:05Z") {
		t.Errorf("JSON %s lacks the expiry", b)
	}
}
