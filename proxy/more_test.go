package proxy

import (
	"bytes"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// wsEcho accepts a WebSocket upgrade and echoes every byte back until the client closes.
func wsEcho(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "want a websocket upgrade", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
	_ = brw.Flush()
	_, _ = io.Copy(conn, brw)
}

// wsAccept is RFC 6455's Sec-WebSocket-Accept for key.
func wsAccept(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func TestWebSocketPassesThrough(t *testing.T) {
	upCA := newTestCA(t, "game server CA")
	tlsSrv, _ := startTLSServer(t, upCA.leaf(t, "*.kancolle-server.com"), http.HandlerFunc(wsEcho))
	plainSrv, _ := startHTTPServer(t, http.HandlerFunc(wsEcho))
	h := newHarness(t, upCA.pool, []DialRule{ruleTo(t, "", "443", tlsSrv), ruleTo(t, "", "80", plainSrv)}, nil)
	client := h.client(t)

	for _, url := range []string{"https://" + gameHost + "/ws", "http://" + gameHost + "/ws"} {
		t.Run(url[:strings.Index(url, ":")], func(t *testing.T) {
			const key = "dGhlIHNhbXBsZSBub25jZQ=="
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", key)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
				t.Fatalf("status %d accept %q, want 101 and the server's accept", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
			}
			conn, ok := resp.Body.(io.ReadWriteCloser)
			if !ok {
				t.Fatalf("101 body is %T, not a connection", resp.Body)
			}
			// A masked text frame "hello", then a larger binary one: the echo must come back whole.
			for _, frame := range [][]byte{
				{0x81, 0x85, 1, 2, 3, 4, 'h' ^ 1, 'e' ^ 2, 'l' ^ 3, 'l' ^ 4, 'o' ^ 1},
				assetBytes(9, 40<<10),
			} {
				if _, err := conn.Write(frame); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(frame))
				if _, err := io.ReadFull(conn, got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, frame) {
					t.Fatalf("echo differs")
				}
			}
		})
	}
	if n := h.sink.started.Load(); n != 0 {
		t.Errorf("a WebSocket was offered to the Sink %d times", n)
	}
}

func TestPanicsAreRecovered(t *testing.T) {
	body := assetBytes(10, 50<<10)
	tests := []struct {
		name string
		edit func(h *harness)
		// wantCapture: a Finish is expected, with this completeness.
		wantCapture, wantComplete bool
	}{
		{"Sink.Start", func(h *harness) {
			h.sink.OnStart = func(*http.Request, *http.Response) { panic("start") }
		}, false, false},
		{"Spool.Write", func(h *harness) {
			h.sink.OnWrite = func([]byte) error { panic("write") }
		}, true, false},
		{"Spool.Finish", func(h *harness) {
			h.sink.OnFinish = func(bool) { panic("finish") }
		}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, client, _ := newGame(t, serveAsset(body), nil)
			tt.edit(h)
			for i := range 2 { // the proxy keeps serving after the panic
				resp, err := client.Get("https://" + gameHost + "/kcs2/img/a.png")
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
					t.Fatalf("request %d: status %d, %d bytes; want the intact body", i, resp.StatusCode, len(got))
				}
				if tt.wantCapture {
					if c := h.sink.next(t); c.Complete != tt.wantComplete {
						t.Errorf("capture complete=%v, want %v", c.Complete, tt.wantComplete)
					}
				}
			}
			h.sink.none(t)
			if st := h.proxy.Stats(); st.PanicsRecovered != 2 {
				t.Errorf("PanicsRecovered = %d, want 2", st.PanicsRecovered)
			}
			if n := h.logs.FilterMessage("recovered panic").Len(); n != 2 {
				t.Errorf("%d panic log lines, want 2", n)
			}
		})
	}
}

// panickingCerts is a CertSource that panics.
type panickingCerts struct{}

func (panickingCerts) LeafFor(string) (*tls.Certificate, error) { panic("leaf") }

func TestPanickingCertSourceFailsOnlyThatConnection(t *testing.T) {
	upCA := newTestCA(t, "game server CA")
	game, _ := startTLSServer(t, upCA.leaf(t, gameHost), serveAsset([]byte("x")))
	otherCA := newTestCA(t, "other CA")
	other, _ := startTLSServer(t, otherCA.leaf(t, "other.example.test"), serveAsset([]byte("fine")))
	rules := []DialRule{ruleTo(t, "other.example.test", "443", other), ruleTo(t, "", "443", game)}
	h := newHarness(t, upCA.pool, rules, func(o *Options) { o.Certs = panickingCerts{} })
	client := h.client(t, otherCA.cert)

	if _, err := client.Get("https://" + gameHost + "/kcs2/img/a.png"); err == nil {
		t.Fatal("request succeeded without a leaf certificate")
	}
	waitFor(t, "the panic to be counted", func() bool { return h.proxy.Stats().PanicsRecovered == 1 })

	// The proxy still serves: a tunneled host works.
	resp, err := client.Get("https://other.example.test/")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); string(got) != "fine" {
		t.Errorf("got %q", got)
	}
}

func TestSetCaptureUnderTraffic(t *testing.T) {
	body := assetBytes(11, 16<<10)
	h, _, _ := newGame(t, serveAsset(body), nil)
	stop := make(chan struct{})
	var flips sync.WaitGroup
	flips.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r := testRules()
			r.Enable = i%2 == 0
			r.PathPrefixes = append(r.PathPrefixes, "/x"+strings.Repeat("y", i%5))
			h.proxy.SetCapture(r)
		}
	})
	var clients sync.WaitGroup
	var bad atomic.Int64
	for range 4 {
		client := h.client(t)
		clients.Go(func() {
			for range 15 {
				resp, err := client.Get("https://" + gameHost + "/kcs2/img/a.png")
				if err != nil {
					bad.Add(1)
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || !bytes.Equal(b, body) {
					bad.Add(1)
				}
			}
		})
	}
	clients.Wait()
	close(stop)
	flips.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d of 60 responses failed or differed", n)
	}
	// Every started capture finished, and completely.
	st := h.proxy.Stats()
	if st.CapturesStarted != st.CapturesCompleted || st.CapturesAborted != 0 {
		t.Errorf("stats %+v", st)
	}
	for range st.CapturesStarted {
		if c := h.sink.next(t); !c.Complete || !bytes.Equal(c.Body, body) {
			t.Errorf("capture of %s incomplete or wrong", c.URL)
		}
	}
	// The last rules win.
	h.proxy.SetCapture(CaptureRules{Enable: false})
	before := h.sink.started.Load()
	resp, err := h.client(t).Get("https://" + gameHost + "/kcs2/img/a.png")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if h.sink.started.Load() != before {
		t.Errorf("captured after SetCapture disabled capture")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	if _, err := New(Options{MITMHosts: []string{"kancolle-server.com"}}); err == nil {
		t.Error("New accepted MITM hosts without a certificate source")
	}
	if _, err := New(Options{MITMHosts: []string{" "}, Certs: newTestCA(t, "ca")}); err == nil {
		t.Error("New accepted an empty domain")
	}
	p, err := New(Options{})
	if err != nil {
		t.Fatalf("zero Options: %v", err)
	}
	if r := p.rules.Load(); r.Enable || r.MaxAssetBytes != math.MaxInt64 {
		t.Errorf("zero Options rules %+v", r)
	}
}

func TestMatchHost(t *testing.T) {
	domains := []string{"kancolle-server.com", ".Example.ORG."}
	tests := map[string]bool{
		"kancolle-server.com":           true,
		"w01y.kancolle-server.com":      true,
		"W01Y.KanColle-Server.COM:443":  true,
		"w01y.kancolle-server.com.":     true,
		"a.b.kancolle-server.com:8443":  true,
		"example.org":                   true,
		"www.example.org":               true,
		"evilkancolle-server.com":       false,
		"kancolle-server.com.evil.test": false,
		"kancolle-server.co":            false,
		"":                              false,
		"[::1]:443":                     false,
		"203.0.113.7":                   false,
	}
	for host, want := range tests {
		if got := MatchHost(host, domains); got != want {
			t.Errorf("MatchHost(%q) = %v, want %v", host, got, want)
		}
	}
	if MatchHost("kancolle-server.com", []string{""}) {
		t.Error("an empty domain matched")
	}
}

func TestCaptureRulesWants(t *testing.T) {
	rules := testRules().normalized()
	mitm := []string{"kancolle-server.com"}
	tests := []struct {
		name            string
		method, url     string
		status          int
		contentLength   int64
		disabled, wants bool
	}{
		{"asset", "GET", "https://" + gameHost + "/kcs2/img/a.png", 200, 100, false, true},
		{"unknown length", "GET", "https://" + gameHost + "/kcs/sound/a.mp3", 200, -1, false, true},
		{"limit exactly", "GET", "https://" + gameHost + "/gadget_html5/x.js", 200, 1 << 20, false, true},
		{"over limit", "GET", "https://" + gameHost + "/kcs2/img/a.png", 200, 1<<20 + 1, false, false},
		{"empty", "GET", "https://" + gameHost + "/kcs2/img/a.png", 200, 0, false, false},
		{"disabled", "GET", "https://" + gameHost + "/kcs2/img/a.png", 200, 100, true, false},
		{"HEAD", "HEAD", "https://" + gameHost + "/kcs2/img/a.png", 200, 100, false, false},
		{"206", "GET", "https://" + gameHost + "/kcs2/img/a.png", 206, 100, false, false},
		{"304", "GET", "https://" + gameHost + "/kcs2/img/a.png", 304, -1, false, false},
		{"skipped", "GET", "https://" + gameHost + "/kcsapi/api_port/port", 200, 100, false, false},
		{"outside", "GET", "https://" + gameHost + "/index.html", 200, 100, false, false},
		{"other host", "GET", "https://example.com/kcs2/img/a.png", 200, 100, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := *rules
			r.Enable = !tt.disabled
			req, _ := http.NewRequest(tt.method, tt.url, nil)
			resp := &http.Response{StatusCode: tt.status, ContentLength: tt.contentLength, Body: io.NopCloser(strings.NewReader("x"))}
			if got := r.wants(mitm, req, resp); got != tt.wants {
				t.Errorf("wants = %v, want %v", got, tt.wants)
			}
		})
	}
}

// TestTeeBodyIsTransparent checks, on teeBody alone, that a failing spool never changes
// what the reader gets.
func TestTeeBodyIsTransparent(t *testing.T) {
	p, _ := New(Options{})
	src := assetBytes(12, 10<<10)
	for _, fail := range []bool{false, true} {
		sink := newRecordingSink()
		if fail {
			sink.OnWrite = func([]byte) error { return errors.New("disk full") }
		}
		tee := &teeBody{body: io.NopCloser(bytes.NewReader(src)), p: p, limit: 1 << 20, want: int64(len(src)),
			spool: sink.Start(&http.Request{URL: mustURL(t, "https://"+gameHost+"/kcs2/a.png")}, nil)}
		got, err := io.ReadAll(tee)
		if err != nil || !bytes.Equal(got, src) {
			t.Fatalf("fail=%v: read %d bytes, %v", fail, len(got), err)
		}
		_ = tee.Close()
		if c := sink.next(t); c.Complete == fail {
			t.Errorf("fail=%v: complete=%v", fail, c.Complete)
		}
		sink.none(t) // Close after EOF must not Finish again
	}
}

func TestServeHTTPRecoversPanics(t *testing.T) {
	body := assetBytes(13, 1<<10)
	srv, _ := startHTTPServer(t, serveAsset(body))
	h := newHarness(t, nil, []DialRule{ruleTo(t, "", "80", srv)}, nil)
	h.proxy.testHookServe = func(r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("before any byte")
		}
	}
	client := h.client(t)
	resp, err := client.Get("http://plain.example.test/panic")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	resp, err = client.Get("http://plain.example.test/kcs2/img/a.png")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); !bytes.Equal(got, body) {
		t.Errorf("the proxy did not keep serving after a panic")
	}
	if st := h.proxy.Stats(); st.PanicsRecovered != 1 {
		t.Errorf("PanicsRecovered = %d, want 1", st.PanicsRecovered)
	}
}

// TestServeHTTPAbortsAfterPartialResponse drives a real goproxy panic: goproxy panics when
// a WebSocket upgrade meets a ResponseWriter that cannot be hijacked, after it has written
// the 101. The response has begun, so ServeHTTP must not append a 502 to it: it aborts the
// connection the way net/http expects (http.ErrAbortHandler, which net/http swallows).
func TestServeHTTPAbortsAfterPartialResponse(t *testing.T) {
	srv, _ := startHTTPServer(t, http.HandlerFunc(wsEcho))
	h := newHarness(t, nil, []DialRule{ruleTo(t, "", "80", srv)}, nil)
	req := httptest.NewRequest(http.MethodGet, "http://"+gameHost+"/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	rec := httptest.NewRecorder()
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("ServeHTTP panicked with %v, want http.ErrAbortHandler", v)
		}
		if st := h.proxy.Stats(); st.PanicsRecovered != 1 {
			t.Errorf("PanicsRecovered = %d, want 1", st.PanicsRecovered)
		}
		if rec.Code != http.StatusSwitchingProtocols {
			t.Errorf("recorded status %d: a 502 was written over the begun response", rec.Code)
		}
	}()
	h.proxy.ServeHTTP(rec, req)
	t.Error("ServeHTTP returned normally")
}

func TestHTTP2Upstream(t *testing.T) {
	body := assetBytes(14, 30<<10)
	mux := http.NewServeMux()
	mux.HandleFunc("/kcs2/img/a.png", func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			t.Errorf("upstream got %s, want HTTP/2", r.Proto)
		}
		serveAsset(body)(w, r)
	})
	mux.HandleFunc("/ws", wsEcho)
	upCA := newTestCA(t, "game server CA")
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*upCA.leaf(t, gameHost)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	h := newHarness(t, upCA.pool, []DialRule{ruleTo(t, "", "443", srv)}, nil)
	client := h.client(t)

	resp, err := client.Get("https://" + gameHost + "/kcs2/img/a.png")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, resp)
	if resp.ProtoMajor != 1 || !bytes.Equal(got, body) || resp.ContentLength != int64(len(body)) {
		t.Errorf("client got %s, %d bytes, ContentLength %d", resp.Proto, len(got), resp.ContentLength)
	}
	if c := h.sink.next(t); !c.Complete || !bytes.Equal(c.Body, body) {
		t.Errorf("capture complete=%v %d bytes", c.Complete, len(c.Body))
	}

	// A WebSocket upgrade still goes upstream over HTTP/1.1.
	req, _ := http.NewRequest(http.MethodGet, "https://"+gameHost+"/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade status %d", resp.StatusCode)
	}
}

func TestRequestBodyPassesThrough(t *testing.T) {
	h, client, _ := newGame(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(r.Method + " " + r.Header.Get("Content-Type") + " " + r.Header.Get("Referer") + " "))
		_, _ = w.Write(b)
	}), nil)
	form := "api_token=abc&api_verno=1&" + strings.Repeat("x", 100<<10)
	req, _ := http.NewRequest(http.MethodPost, "https://"+gameHost+"/kcsapi/api_port/port", strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", "https://"+gameHost+"/kcs2/index.php")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	want := "POST application/x-www-form-urlencoded https://" + gameHost + "/kcs2/index.php " + form
	if got := readAll(t, resp); string(got) != want {
		t.Errorf("upstream saw a different request (%d bytes, want %d)", len(got), len(want))
	}
	if n := h.sink.started.Load(); n != 0 {
		t.Errorf("an API call was offered to the Sink")
	}
}

func TestMITMResumesTLSSessions(t *testing.T) {
	h, _, _ := newGame(t, serveAsset([]byte("x")), nil)
	tr := h.transport()
	tr.DisableKeepAlives = true // a new CONNECT and handshake per request
	tr.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var resumed []bool
	for range 3 {
		resp, err := client.Get("https://" + gameHost + "/kcs2/img/a.png")
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		resumed = append(resumed, resp.TLS.DidResume)
	}
	if resumed[0] || !resumed[1] || !resumed[2] {
		t.Errorf("DidResume per connection = %v, want [false true true]", resumed)
	}
	if st := h.proxy.Stats(); st.MITM != 3 {
		t.Errorf("MITM CONNECTs = %d, want 3", st.MITM)
	}
}
