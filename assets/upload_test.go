package assets

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// mustAsset builds the asset of data captured at urlPath.
func mustAsset(tb testing.TB, urlPath string, data []byte) Asset {
	tb.Helper()
	a, err := NewAsset(urlPath, int64(len(data)), hashOf(data))
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// testSession signs a user in on srv: a session of real tokens the fake
// accepts, as a caller would post it.
func testSession(srv *assettest.Server) Session {
	tk := srv.NewSession()
	return Session{AccessToken: tk.Access, RefreshToken: tk.Refresh, DatasetToken: tk.Dataset, ExpiresAt: tk.ExpiresAt}
}

// stubSession is a session of real tokens for a test whose server is a
// stub: minted by a fake closed at once.
func stubSession(tb testing.TB) Session {
	tb.Helper()
	srv := assettest.NewServer()
	defer srv.Close()
	return testSession(srv)
}

// holding is a SessionHolder holding s.
func holding(s Session) *SessionHolder {
	h := new(SessionHolder)
	h.Set(s)
	return h
}

// newTestUploader builds an uploader against srv with a session set; edit
// may change the options first.
func newTestUploader(tb testing.TB, srv *assettest.Server, edit func(*UploaderOptions)) (*Uploader, *SessionHolder) {
	tb.Helper()
	h := new(SessionHolder)
	h.Set(testSession(srv))
	o := UploaderOptions{
		Endpoint:     srv.UploadEndpoint,
		Session:      h,
		RetryWaitMin: time.Millisecond,
		RetryWaitMax: 5 * time.Millisecond,
		Transport:    srv.Client().Transport,
	}
	if edit != nil {
		edit(&o)
	}
	u, err := NewUploader(o)
	if err != nil {
		tb.Fatal(err)
	}
	return u, h
}

var titlePNG = []byte("\x89PNG\r\n\x1a\n title screen, not really a PNG")

func TestUploadSuccess(t *testing.T) {
	for _, tt := range []struct {
		name     string
		tls      bool
		relative bool
	}{
		{"http absolute uploadUrl", false, false},
		{"http relative uploadUrl", false, true},
		{"https", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := assettest.NewServer()
			if tt.tls {
				srv.Close()
				srv = assettest.NewTLSServer()
			}
			defer srv.Close()
			srv.KeepBytes(true)
			srv.SetRelativeUploadURL(tt.relative)
			u, _ := newTestUploader(t, srv, nil)
			a := mustAsset(t, "/kcs2/img/title/01.png", titlePNG)

			res := u.Upload(context.Background(), a, bytes.NewReader(titlePNG))
			if res.Class != Success || res.Status != 200 || res.Stage != StageUpload {
				t.Fatalf("Upload = %+v", res)
			}
			o, ok := srv.Object("assets/kcs2/img/title/01.png")
			if !ok || !bytes.Equal(o.Data, titlePNG) || o.ContentHash != a.ContentHash {
				t.Errorf("stored %+v", o)
			}
			if srv.Requests(assettest.Handshake) != 1 || srv.Requests(assettest.Upload) != 1 {
				t.Errorf("requests: %d handshakes, %d uploads", srv.Requests(assettest.Handshake), srv.Requests(assettest.Upload))
			}

			// Again: the handshake's 409 ends it.
			res = u.Upload(context.Background(), a, bytes.NewReader(titlePNG))
			if res.Class != Success || res.Status != 409 || res.Stage != StageHandshake {
				t.Errorf("second Upload = %+v", res)
			}
			if srv.Requests(assettest.Upload) != 1 || srv.Uploads() != 1 {
				t.Errorf("second upload sent stage 2")
			}
		})
	}
}

// TestUploadClassTable runs each row of SPEC §5's table at each stage.
func TestUploadClassTable(t *testing.T) {
	type row struct {
		name   string
		fault  *assettest.Fault // nil: no fault
		faults int              // how many times to queue it (default 1)
		want   Class
		status int
	}
	st := func(code int, want Class) row {
		return row{name: fmt.Sprint(code), fault: &assettest.Fault{Status: code}, want: want, status: code}
	}
	rows := []row{
		{name: "ok", want: Success, status: 200},
		st(201, Success),
		st(409, Success),
		{name: "401", fault: &assettest.Fault{Status: 401}, faults: 2, want: Auth, status: 401},
		{name: "403", fault: &assettest.Fault{Status: 403}, faults: 2, want: Auth, status: 403},
		{name: "reset", fault: &assettest.Fault{Reset: true}, want: Transient},
		{name: "close mid-body", fault: &assettest.Fault{CloseMidBody: true}, want: Transient, status: 200},
		{name: "timeout", fault: &assettest.Fault{Delay: time.Minute}, want: Transient},
		st(408, Transient), st(425, Transient), st(429, Transient),
		st(500, Transient), st(502, Transient), st(503, Transient), st(504, Transient),
		st(501, Permanent), st(400, Permanent), st(404, Permanent), st(413, Permanent),
		st(422, Permanent), st(415, Permanent),
	}
	for _, stage := range []assettest.Route{assettest.Handshake, assettest.Upload} {
		for _, r := range rows {
			if stage == assettest.Handshake && r.status == 201 {
				continue // a 201 handshake has no uploadUrl: see TestUploadBadHandshakeAnswer
			}
			if stage == assettest.Upload && r.fault != nil && r.fault.CloseMidBody {
				continue // a 200 at stage 2 means stored, whatever its body
			}
			t.Run(stage.String()+"/"+r.name, func(t *testing.T) {
				srv := assettest.NewServer()
				defer srv.Close()
				u, _ := newTestUploader(t, srv, func(o *UploaderOptions) {
					o.RetryMax = -1
					o.RequestTimeout = 200 * time.Millisecond
				})
				if r.fault != nil {
					for range max(r.faults, 1) {
						srv.AddFaults(stage, *r.fault)
					}
				}
				res := u.Upload(context.Background(), mustAsset(t, "/kcs2/img/a.png", titlePNG), bytes.NewReader(titlePNG))
				if res.Class != r.want {
					t.Fatalf("class %s, want %s (%+v)", res.Class, r.want, res)
				}
				if res.Status != r.status {
					t.Errorf("status %d, want %d", res.Status, r.status)
				}
				wantStage := StageUpload
				if r.fault != nil && stage == assettest.Handshake {
					wantStage = StageHandshake
				}
				if res.Stage != wantStage {
					t.Errorf("stage %q, want %q", res.Stage, wantStage)
				}
				if res.Reason == "" || (res.Class != Success && res.Err == nil) {
					t.Errorf("no reason or error: %+v", res)
				}
				// One try per request (RetryMax -1); a stage-2 auth failure
				// redoes both stages once.
				wantHS, wantUp := 1, 1
				switch {
				case stage == assettest.Handshake && r.fault != nil:
					wantUp = 0
				case stage == assettest.Upload && r.want == Auth:
					wantHS, wantUp = 2, 2
				}
				if got := srv.Requests(assettest.Handshake); got != wantHS {
					t.Errorf("%d handshakes, want %d", got, wantHS)
				}
				if got := srv.Requests(assettest.Upload); got != wantUp {
					t.Errorf("%d uploads, want %d", got, wantUp)
				}
			})
		}
	}
}

func TestUploadNoSessionSendsNothing(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	u, h := newTestUploader(t, srv, nil)
	for _, s := range []func(){h.Clear, func() { h.Set(Session{RefreshToken: "r"}) }} {
		s()
		res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
		if res.Class != Auth || !errors.Is(res.Err, ErrNoSession) || res.Stage != "" {
			t.Errorf("Upload = %+v, want Auth/ErrNoSession", res)
		}
	}
	if n := srv.TotalRequests(); n != 0 {
		t.Errorf("%d requests sent without a session", n)
	}
}

func TestUploadInvalidAssetSendsNothing(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	u, _ := newTestUploader(t, srv, nil)
	a := mustAsset(t, "/kcs2/a.png", titlePNG)
	a.ContentHash = strings.ToUpper(a.ContentHash)
	res := u.Upload(context.Background(), a, bytes.NewReader(titlePNG))
	if res.Class != Permanent || !errors.Is(res.Err, ErrInvalidAsset) {
		t.Errorf("Upload = %+v", res)
	}
	if srv.TotalRequests() != 0 {
		t.Errorf("requests sent for an invalid asset")
	}
}

// expireOnUpload is a transport that voids the server's upload tokens just
// before the first stage-2 request goes out, as if the token had expired in
// between.
type expireOnUpload struct {
	next http.RoundTripper
	srv  *assettest.Server
	done atomic.Bool
}

func (e *expireOnUpload) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("X-Upload-Token") != "" && e.done.CompareAndSwap(false, true) {
		e.srv.ExpireUploadTokens()
	}
	return e.next.RoundTrip(r)
}

func TestUploadTokenExpiryRedoesHandshake(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	u, _ := newTestUploader(t, srv, func(o *UploaderOptions) {
		o.Transport = &expireOnUpload{next: o.Transport, srv: srv}
	})
	res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
	if res.Class != Success || res.Status != 200 {
		t.Fatalf("Upload = %+v", res)
	}
	if hs, up, ok := srv.Requests(assettest.Handshake), srv.Requests(assettest.Upload), srv.Uploads(); hs != 2 || up != 2 || ok != 1 {
		t.Errorf("handshakes %d, uploads %d, accepted %d; want 2, 2, 1", hs, up, ok)
	}
}

func TestUploadAuthAtStage2Twice(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	u, _ := newTestUploader(t, srv, func(o *UploaderOptions) { o.RetryMax = 3 })
	srv.AddFaults(assettest.Upload, assettest.Fault{Status: 401}, assettest.Fault{Status: 401})
	res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
	if res.Class != Auth || res.Status != 401 || res.Stage != StageUpload {
		t.Fatalf("Upload = %+v", res)
	}
	if hs, up := srv.Requests(assettest.Handshake), srv.Requests(assettest.Upload); hs != 2 || up != 2 {
		t.Errorf("handshakes %d, uploads %d; want 2, 2 (auth is never retried in-call)", hs, up)
	}
}

func TestUploadRevokedSession(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	u, h := newTestUploader(t, srv, nil)
	sess, _ := h.Get()
	srv.RevokeToken(sess.AccessToken)
	res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
	if res.Class != Auth || res.Stage != StageHandshake || srv.TotalRequests() != 1 {
		t.Errorf("Upload = %+v after %d requests", res, srv.TotalRequests())
	}
}

func TestUploadRetryAfter(t *testing.T) {
	date := time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)
	for _, tt := range []struct {
		name     string
		status   int
		value    string
		min, max time.Duration
	}{
		{"seconds", 503, "120", 120 * time.Second, 120 * time.Second},
		{"capped", 503, "99999999", time.Hour, time.Hour},
		{"HTTP date", 503, date, 115 * time.Second, 120 * time.Second},
		{"429", 429, "300", 300 * time.Second, 300 * time.Second},
		{"garbage", 503, "soon", 0, 0},
	} {
		for _, stage := range []assettest.Route{assettest.Handshake, assettest.Upload} {
			t.Run(tt.name+"/"+stage.String(), func(t *testing.T) {
				srv := assettest.NewServer()
				defer srv.Close()
				u, _ := newTestUploader(t, srv, func(o *UploaderOptions) { o.RetryMax = -1 })
				srv.AddFaults(stage, assettest.Fault{Status: tt.status, RetryAfter: tt.value})
				res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
				if res.Class != Transient || res.RetryAfter < tt.min || res.RetryAfter > tt.max {
					t.Errorf("Upload = %s, RetryAfter %s; want transient in [%s, %s]", res, res.RetryAfter, tt.min, tt.max)
				}
			})
		}
	}
}

// TestUploadLongRetryAfterEndsCall: a Retry-After longer than RetryWaitMax
// is left to the caller, even with retries to spare.
func TestUploadLongRetryAfterEndsCall(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	u, _ := newTestUploader(t, srv, func(o *UploaderOptions) { o.RetryMax = 5 })
	srv.AddFaults(assettest.Handshake, assettest.Fault{Status: 503, RetryAfter: "120"})
	start := time.Now()
	res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
	if res.Class != Transient || res.RetryAfter != 120*time.Second || srv.Requests(assettest.Handshake) != 1 {
		t.Errorf("Upload = %+v after %d handshakes", res, srv.Requests(assettest.Handshake))
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("call waited %s", d)
	}
}

// TestUploadShortRetryAfterHonouredInCall: a Retry-After within
// RetryWaitMax is waited out before the next in-call try.
func TestUploadShortRetryAfterHonouredInCall(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	u, _ := newTestUploader(t, srv, func(o *UploaderOptions) { o.RetryMax = 1; o.RetryWaitMax = 2 * time.Second })
	srv.AddFaults(assettest.Handshake, assettest.Fault{Status: 429, RetryAfter: "1"})
	start := time.Now()
	res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
	if res.Class != Success || srv.Requests(assettest.Handshake) != 2 {
		t.Fatalf("Upload = %+v after %d handshakes", res, srv.Requests(assettest.Handshake))
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("retried after %s, before the server's Retry-After of 1s", d)
	}
}

func TestUploadInCallRetries(t *testing.T) {
	reset := assettest.Fault{Reset: true}
	midBody := assettest.Fault{Reset: true, ReadBody: 10}
	for _, tt := range []struct {
		name  string
		stage assettest.Route
		fault assettest.Fault
		n     int
	}{
		{"handshake 503", assettest.Handshake, assettest.Fault{Status: 503}, 3},
		{"handshake reset", assettest.Handshake, reset, 2},
		{"upload 502", assettest.Upload, assettest.Fault{Status: 502}, 3},
		{"upload reset mid-body", assettest.Upload, midBody, 3},
		{"upload 429", assettest.Upload, assettest.Fault{Status: 429}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := assettest.NewServer()
			defer srv.Close()
			srv.KeepBytes(true)
			u, _ := newTestUploader(t, srv, func(o *UploaderOptions) { o.RetryMax = 3 })
			for range tt.n {
				srv.AddFaults(tt.stage, tt.fault)
			}
			res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
			if res.Class != Success {
				t.Fatalf("Upload = %+v", res)
			}
			if got := srv.Requests(tt.stage); got != tt.n+1 {
				t.Errorf("%d requests on %s, want %d", got, tt.stage, tt.n+1)
			}
			// The server checked the hash: the body was rewound each try.
			if o, _ := srv.Object("assets/kcs2/a.png"); !bytes.Equal(o.Data, titlePNG) {
				t.Errorf("stored %q", o.Data)
			}
		})
	}
	t.Run("gives up after RetryMax", func(t *testing.T) {
		srv := assettest.NewServer()
		defer srv.Close()
		u, _ := newTestUploader(t, srv, func(o *UploaderOptions) { o.RetryMax = 2 })
		srv.SetFaultFunc(assettest.Upload, func(*http.Request, int) *assettest.Fault { return &assettest.Fault{Status: 500} })
		res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
		if res.Class != Transient || res.Status != 500 || srv.Requests(assettest.Upload) != 3 {
			t.Errorf("Upload = %+v after %d uploads, want transient 500 after 3", res, srv.Requests(assettest.Upload))
		}
	})
}

func TestUploadNeverRetriesAuthOrPermanent(t *testing.T) {
	for _, code := range []int{401, 403, 400, 404, 413, 422, 501} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			srv := assettest.NewServer()
			defer srv.Close()
			u, _ := newTestUploader(t, srv, func(o *UploaderOptions) { o.RetryMax = 5 })
			srv.AddFaults(assettest.Handshake, assettest.Fault{Status: code})
			res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
			if res.Class == Success || res.Class == Transient {
				t.Fatalf("Upload = %+v", res)
			}
			if n := srv.TotalRequests(); n != 1 {
				t.Errorf("%d requests, want exactly 1", n)
			}
		})
	}
}

func TestUploadHeaders(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	u, h := newTestUploader(t, srv, nil)
	sess, _ := h.Get()
	a := mustAsset(t, "/kcs2/img/title/01.png", titlePNG)
	if res := u.Upload(context.Background(), a, bytes.NewReader(titlePNG)); res.Class != Success {
		t.Fatalf("Upload = %+v", res)
	}
	origin := strings.TrimSuffix(srv.URL, "/")
	hs := srv.LastHeader(assettest.Handshake)
	for k, want := range map[string]string{
		"Content-Type":    "application/json",
		"Authorization":   "Bearer " + sess.AccessToken,
		"Origin":          origin,
		"X-Dataset-Token": sess.DatasetToken,
		"X-Upload-Token":  "",
	} {
		if got := hs.Get(k); got != want {
			t.Errorf("handshake %s = %q, want %q", k, got, want)
		}
	}
	up := srv.LastHeader(assettest.Upload)
	for k, want := range map[string]string{
		"Content-Type":    "image/png",
		"Content-Length":  fmt.Sprint(len(titlePNG)),
		"Authorization":   "Bearer " + sess.AccessToken,
		"Origin":          origin,
		"X-Dataset-Token": sess.DatasetToken,
	} {
		if got := up.Get(k); got != want {
			t.Errorf("upload %s = %q, want %q", k, got, want)
		}
	}
	if up.Get("X-Upload-Token") == "" {
		t.Errorf("upload without X-Upload-Token")
	}

	// Without a dataset token, or with an expired one, nothing is sent: the server would
	// refuse it (SPEC §5).
	before := srv.TotalRequests()
	expired := srv.MintDatasetToken(jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()})
	for _, ds := range []string{"", expired} {
		h.Set(Session{AccessToken: sess.AccessToken, RefreshToken: sess.RefreshToken, DatasetToken: ds})
		b := []byte("other bytes")
		res := u.Upload(context.Background(), mustAsset(t, "/kcs2/b.png", b), bytes.NewReader(b))
		if res.Class != Auth || (!errors.Is(res.Err, ErrNoDatasetToken) && !errors.Is(res.Err, ErrDatasetExpired)) {
			t.Errorf("dataset token %q: Upload = %+v, want auth for want of a dataset token", ds, res)
		}
	}
	if n := srv.TotalRequests() - before; n != 0 {
		t.Errorf("%d requests sent without a usable dataset token", n)
	}
}

func TestOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://fusou.dev/api/asset-sync/upload":     "https://fusou.dev",
		"https://FUSOU.dev:443/api/asset-sync/upload": "https://fusou.dev",
		"http://127.0.0.1:8787/api/x?y=1":             "http://127.0.0.1:8787",
		"http://example.com:80/x":                     "http://example.com",
		"https://[::1]:9443/x":                        "https://[::1]:9443",
	} {
		u, err := parseEndpoint(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := origin(u); got != want {
			t.Errorf("origin(%q) = %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"", "fusou.dev/upload", "ftp://fusou.dev/x", "/api/asset-sync/upload"} {
		if _, err := NewUploader(UploaderOptions{Endpoint: bad, Session: new(SessionHolder)}); err == nil {
			t.Errorf("NewUploader accepted endpoint %q", bad)
		}
	}
	if _, err := NewUploader(UploaderOptions{Endpoint: "https://fusou.dev/x"}); err == nil {
		t.Errorf("NewUploader accepted no session holder")
	}
}

// stubHandshake is a server whose stage 1 answers body with status.
func stubHandshake(t *testing.T, status int, body string) (*httptest.Server, *atomic.Int32) {
	var stage2 atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Upload-Token") != "" {
			stage2.Add(1)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(ts.Close)
	return ts, &stage2
}

func TestUploadBadHandshakeAnswer(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		body   string
		want   Class
		err    error
	}{
		{"captive portal page", 200, "<html>sign in</html>", Transient, ErrBadAnswer},
		{"201 without uploadUrl", 201, `{"error":"Created"}`, Transient, ErrBadAnswer},
		{"foreign uploadUrl", 200, `{"uploadUrl":"https://elsewhere.example/up","token":"tok"}`, Permanent, ErrUploadURL},
		{"other scheme", 200, `{"uploadUrl":"https://127.0.0.1/up","token":"tok"}`, Permanent, ErrUploadURL},
		{"unparsable uploadUrl", 200, `{"uploadUrl":"http://[::1","token":"tok"}`, Transient, ErrBadAnswer},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts, stage2 := stubHandshake(t, tt.status, tt.body)
			h := holding(stubSession(t))
			u, err := NewUploader(UploaderOptions{Endpoint: ts.URL + "/api/asset-sync/upload", Session: h, RetryMax: -1})
			if err != nil {
				t.Fatal(err)
			}
			res := u.Upload(context.Background(), mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
			if res.Class != tt.want || !errors.Is(res.Err, tt.err) {
				t.Errorf("Upload = %+v, want %s / %v", res, tt.want, tt.err)
			}
			if stage2.Load() != 0 {
				t.Errorf("stage 2 was sent")
			}
		})
	}
}

func TestUploadHonoursContext(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	u, _ := newTestUploader(t, srv, nil)
	srv.AddFaults(assettest.Upload, assettest.Fault{Delay: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result)
	go func() {
		done <- u.Upload(ctx, mustAsset(t, "/kcs2/a.png", titlePNG), bytes.NewReader(titlePNG))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Requests(assettest.Upload) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the server, not synchronising
	}
	cancel()
	select {
	case res := <-done:
		if res.Class != Transient || !errors.Is(res.Err, context.Canceled) {
			t.Errorf("Upload = %+v", res)
		}
		if srv.Requests(assettest.Upload) != 1 {
			t.Errorf("retried after the context ended")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Upload did not return after cancel")
	}
}

// TestUploadNeverLeaksTokens scans every log line (debug level) and every
// Result of a range of outcomes for the session's and the upload's tokens.
func TestUploadNeverLeaksTokens(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	srv := assettest.NewServer()
	defer srv.Close()
	u, h := newTestUploader(t, srv, func(o *UploaderOptions) {
		o.Logger = zap.New(core)
		o.RequestTimeout = 200 * time.Millisecond
	})
	sess, _ := h.Get()
	echo := "you sent " + sess.AccessToken + " and " + sess.DatasetToken + " and " + sess.RefreshToken
	scenarios := []struct {
		stage assettest.Route
		fault assettest.Fault
	}{
		{assettest.Handshake, assettest.Fault{}},
		{assettest.Handshake, assettest.Fault{Status: 400, Body: echo}},
		{assettest.Handshake, assettest.Fault{Status: 503, Body: echo, RetryAfter: "120"}},
		{assettest.Handshake, assettest.Fault{Status: 401, Body: echo}},
		{assettest.Handshake, assettest.Fault{Reset: true}},
		{assettest.Upload, assettest.Fault{Status: 422, Body: echo}},
		{assettest.Upload, assettest.Fault{Status: 500, Body: echo}},
		{assettest.Upload, assettest.Fault{Status: 401, Body: echo}},
		{assettest.Upload, assettest.Fault{Delay: time.Minute}},
	}
	var results []Result
	var uploadTokens []string
	for i, sc := range scenarios {
		if sc.fault != (assettest.Fault{}) {
			srv.SetFaultFunc(sc.stage, func(*http.Request, int) *assettest.Fault { f := sc.fault; return &f })
		}
		data := fmt.Appendf(nil, "asset %d", i)
		results = append(results, u.Upload(context.Background(), mustAsset(t, fmt.Sprintf("/kcs2/%d.png", i), data), bytes.NewReader(data)))
		if tok := srv.LastHeader(assettest.Upload).Get("X-Upload-Token"); tok != "" {
			uploadTokens = append(uploadTokens, tok)
		}
		srv.ClearFaults()
	}
	if len(uploadTokens) == 0 {
		t.Fatal("no upload token seen")
	}
	secrets := append([]string{sess.AccessToken, sess.RefreshToken, sess.DatasetToken}, uploadTokens...)
	check := func(where, s string) {
		for _, sec := range secrets {
			if strings.Contains(s, sec) {
				t.Errorf("%s holds a token: %q", where, s)
			}
		}
	}
	for i, r := range results {
		check(fmt.Sprintf("result %d", i), fmt.Sprintf("%v %+v %#v %s %s", r, r, r, r.Reason, r.Body))
		if r.Err != nil {
			check(fmt.Sprintf("result %d error", i), r.Err.Error())
		}
	}
	if !strings.Contains(results[1].Body, redacted) {
		t.Errorf("echoed token not redacted in Body: %q", results[1].Body)
	}
	if logs.Len() == 0 {
		t.Fatal("nothing logged at debug level")
	}
	for _, e := range logs.All() {
		check("log line", fmt.Sprintf("%s %v", e.Message, e.ContextMap()))
	}
}
