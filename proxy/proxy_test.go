package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// fixedDate keeps the upstream's Date header stable so headers compare exactly.
const fixedDate = "Mon, 01 Dec 2025 00:00:00 GMT"

// assetHeaders are the headers the game server sends with an asset, chosen to include
// repeated and oddly cased fields.
func assetHeaders(size int) http.Header {
	return http.Header{
		"Content-Type":   {"image/png"},
		"Content-Length": {strconv.Itoa(size)},
		"Date":           {fixedDate},
		"Etag":           {`"v5-abc"`},
		"Cache-Control":  {"max-age=2592000"},
		"Last-Modified":  {"Sun, 30 Nov 2025 12:00:00 GMT"},
		"Set-Cookie":     {"a=1; Path=/", "b=2; Path=/"},
		"X-Game":         {"first", "second"},
	}
}

// serveAsset writes body with assetHeaders.
func serveAsset(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range assetHeaders(len(body)) {
			w.Header()[k] = v
		}
		_, _ = w.Write(body)
	}
}

// newGame starts an HTTPS game server for *.kancolle-server.com with its own CA, and a
// proxy whose dial rule sends every :443 dial to it.
func newGame(t *testing.T, handler http.Handler, edit func(*Options)) (*harness, *http.Client, *atomic.Int64) {
	t.Helper()
	upCA := newTestCA(t, "game server CA")
	srv, conns := startTLSServer(t, upCA.leaf(t, "kancolle-server.com", "*.kancolle-server.com"), handler)
	h := newHarness(t, upCA.pool, []DialRule{ruleTo(t, "", "443", srv)}, edit)
	return h, h.client(t), conns
}

func TestMITMCaptureKeepsResponseIdentical(t *testing.T) {
	body := assetBytes(1, 50<<10)
	var acceptEncoding atomic.Value
	mux := http.NewServeMux()
	mux.HandleFunc("/kcs2/img/common/a.png", func(w http.ResponseWriter, r *http.Request) {
		acceptEncoding.Store(r.Header.Values("Accept-Encoding"))
		serveAsset(body)(w, r)
	})
	h, client, upstreamConns := newGame(t, mux, nil)

	const url = "https://" + gameHost + "/kcs2/img/common/a.png?version=5"
	for i := range 3 {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, resp)
		if !bytes.Equal(got, body) {
			t.Fatalf("request %d: body differs from upstream's (%d vs %d bytes)", i, len(got), len(body))
		}
		if !reflect.DeepEqual(resp.Header, assetHeaders(len(body))) {
			t.Errorf("request %d: headers\n got %v\nwant %v", i, resp.Header, assetHeaders(len(body)))
		}
		if resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) != 0 {
			t.Errorf("request %d: framing ContentLength=%d TransferEncoding=%v, want the upstream's length, not chunked",
				i, resp.ContentLength, resp.TransferEncoding)
		}
		c := h.sink.next(t)
		if c.URL != url || !c.Complete || !bytes.Equal(c.Body, body) {
			t.Errorf("request %d: capture %s complete=%v %d bytes, want %s complete with the body", i, c.URL, c.Complete, len(c.Body), url)
		}
	}
	if v, _ := acceptEncoding.Load().([]string); len(v) != 0 {
		t.Errorf("upstream got Accept-Encoding %q from a client that sent none", v)
	}
	st := h.proxy.Stats()
	// Keep-alive on both sides: one CONNECT from the client, one upstream connection.
	if st.MITM != 1 || upstreamConns.Load() != 1 {
		t.Errorf("MITM CONNECTs=%d upstream connections=%d, want 1 and 1 (keep-alive)", st.MITM, upstreamConns.Load())
	}
	if st.Requests != 3 || st.CapturesStarted != 3 || st.CapturesCompleted != 3 || st.CapturesAborted != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestGzipReachesClientAndSpoolEncoded(t *testing.T) {
	plain := bytes.Repeat([]byte(`{"api_mst_ship":[1,2,3]}`), 2000)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(plain)
	_ = zw.Close()
	var gotAE atomic.Value
	h, client, _ := newGame(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAE.Store(r.Header.Get("Accept-Encoding"))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(gz.Len()))
		_, _ = w.Write(gz.Bytes())
	}), nil)

	req, _ := http.NewRequest(http.MethodGet, "https://"+gameHost+"/kcs2/data/start.json", nil)
	req.Header.Set("Accept-Encoding", "gzip, deflate, br")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, resp)
	if ae, _ := gotAE.Load().(string); ae != "gzip, deflate, br" {
		t.Errorf("upstream got Accept-Encoding %q, want the client's as is", ae)
	}
	if resp.Header.Get("Content-Encoding") != "gzip" || !bytes.Equal(got, gz.Bytes()) {
		t.Errorf("client got Content-Encoding %q and %d bytes, want gzip and the %d encoded bytes",
			resp.Header.Get("Content-Encoding"), len(got), gz.Len())
	}
	if resp.ContentLength != int64(gz.Len()) {
		t.Errorf("ContentLength = %d, want %d", resp.ContentLength, gz.Len())
	}
	c := h.sink.next(t)
	if !c.Complete || !bytes.Equal(c.Body, gz.Bytes()) {
		t.Errorf("spool got %d bytes complete=%v, want the %d encoded bytes", len(c.Body), c.Complete, gz.Len())
	}
}

// assetServer serves the responses the capture tests need.
func assetServer(body []byte) http.Handler {
	mux := http.NewServeMux()
	modtime := time.Date(2025, 11, 30, 12, 0, 0, 0, time.UTC)
	serve := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v5"`)
		http.ServeContent(w, r, "a.png", modtime, bytes.NewReader(body))
	}
	mux.HandleFunc("/kcs2/img/a.png", serve)
	mux.HandleFunc("/kcsapi/api_start2/getData", serve)
	mux.HandleFunc("/other/a.png", serve)
	mux.HandleFunc("/kcs2/teapot.png", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/kcs2/chunked.png", func(w http.ResponseWriter, r *http.Request) {
		for chunk := range slices.Chunk(body, 8<<10) {
			_, _ = w.Write(chunk)
			http.NewResponseController(w).Flush() // no Content-Length: chunked
		}
	})
	mux.HandleFunc("/kcs2/truncated.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body[:len(body)/2])
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // close the connection mid-body
	})
	return mux
}

func TestNotCaptured(t *testing.T) {
	body := assetBytes(2, 40<<10)
	h, client, _ := newGame(t, assetServer(body), func(o *Options) {
		o.Capture.MaxAssetBytes = 32 << 10
	})
	base := "https://" + gameHost
	tests := []struct {
		name, method, path string
		header             http.Header
		wantStatus         int
	}{
		{"206", "GET", "/kcs2/img/a.png", http.Header{"Range": {"bytes=0-99"}}, http.StatusPartialContent},
		{"304", "GET", "/kcs2/img/a.png", http.Header{"If-None-Match": {`"v5"`}}, http.StatusNotModified},
		{"HEAD", "HEAD", "/kcs2/img/a.png", nil, http.StatusOK},
		{"POST", "POST", "/kcs2/img/a.png", nil, http.StatusOK},
		{"kcsapi", "GET", "/kcsapi/api_start2/getData", nil, http.StatusOK},
		{"outside prefixes", "GET", "/other/a.png", nil, http.StatusOK},
		{"not 200", "GET", "/kcs2/teapot.png", nil, http.StatusTeapot},
		{"Content-Length over limit", "GET", "/kcs2/img/a.png", nil, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, base+tt.path, nil)
			for k, v := range tt.header {
				req.Header[k] = v
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, resp)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusOK && tt.method == "GET" && !bytes.Equal(got, body) {
				t.Errorf("body differs from upstream's")
			}
			// Start runs before the response head is sent, so by now it would have run.
			if n := h.sink.started.Load(); n != 0 {
				t.Errorf("Sink.Start called %d times, want none", n)
			}
			h.sink.none(t)
		})
	}
}

func TestCaptureAborted(t *testing.T) {
	body := assetBytes(3, 100<<10)
	tests := []struct {
		name       string
		path       string
		maxBytes   int64
		failWrite  bool
		wantClient bool // the client still gets the whole body
	}{
		{"chunked body over limit", "/kcs2/chunked.png", 64 << 10, false, true},
		{"upstream truncates", "/kcs2/truncated.png", 1 << 20, false, false},
		{"spool write fails", "/kcs2/chunked.png", 1 << 20, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, client, _ := newGame(t, assetServer(body), func(o *Options) {
				o.Capture.MaxAssetBytes = tt.maxBytes
			})
			if tt.failWrite {
				var writes atomic.Int64
				h.sink.OnWrite = func([]byte) error {
					if writes.Add(1) == 2 {
						return errPlanned
					}
					return nil
				}
			}
			resp, err := client.Get("https://" + gameHost + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tt.wantClient && (err != nil || !bytes.Equal(got, body)) {
				t.Errorf("client got %d bytes, err %v; want the whole body", len(got), err)
			}
			if !tt.wantClient && err == nil {
				t.Errorf("client read a truncated body without error")
			}
			if c := h.sink.next(t); c.Complete {
				t.Errorf("capture finished complete, want aborted")
			}
			if st := h.proxy.Stats(); st.CapturesAborted != 1 || st.CapturesCompleted != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestClientAbortMidBodyAbortsCaptureAndUpstream(t *testing.T) {
	const first = 64 << 10
	chunk := assetBytes(4, 32<<10)
	clientGone := make(chan struct{})
	upstreamDone := make(chan struct{})
	h, client, _ := newGame(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(upstreamDone)
		w.Header().Set("Content-Length", strconv.Itoa(first+64<<20))
		_, _ = w.Write(assetBytes(5, first))
		http.NewResponseController(w).Flush()
		select {
		case <-clientGone:
		case <-time.After(waitTimeout):
			t.Errorf("client never went away")
			return
		}
		// Keep streaming; the proxy's writes to the departed client fail, and it must
		// then cancel this request.
		for range (64 << 20) / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				break
			}
		}
		select {
		case <-r.Context().Done():
		case <-time.After(waitTimeout):
			t.Errorf("upstream request not cancelled after the client aborted")
		}
	}), func(o *Options) { o.Capture.MaxAssetBytes = 128 << 20 })

	resp, err := client.Get("https://" + gameHost + "/kcs2/img/big.png")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, first)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // before EOF: the client's transport closes the connection
	close(clientGone)
	if c := h.sink.next(t); c.Complete {
		t.Errorf("capture complete after the client aborted")
	}
	<-upstreamDone
}

func TestPlainHTTPClientCancelReachesUpstream(t *testing.T) {
	gotRequest := make(chan struct{})
	cancelled := make(chan struct{})
	srv, _ := startHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(gotRequest)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(waitTimeout):
		}
	}))
	h := newHarness(t, nil, []DialRule{ruleTo(t, gameHost, "80", srv)}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+gameHost+"/kcs2/img/slow.png", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := h.client(t).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-gotRequest
	cancel()
	select {
	case <-cancelled:
	case <-time.After(waitTimeout):
		t.Fatal("the upstream request was not cancelled when the client gave up")
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client error %v, want context.Canceled", err)
	}
}

func TestTunnelKeepsUpstreamCertificateAndBytes(t *testing.T) {
	const host = "tunnel.example.test"
	otherCA := newTestCA(t, "other site CA")
	leaf := otherCA.leaf(t, host)
	body := assetBytes(6, 20<<10)
	srv, _ := startTLSServer(t, leaf, serveAsset(body))
	// The proxy's own upstream roots do not include otherCA: only a raw tunnel, with the
	// client verifying the server itself, can succeed.
	h := newHarness(t, nil, []DialRule{ruleTo(t, host, "443", srv)}, nil)
	client := h.client(t, otherCA.cert)

	resp, err := client.Get("https://" + host + "/kcs2/img/a.png")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, resp)
	if !bytes.Equal(got, body) || !reflect.DeepEqual(resp.Header, assetHeaders(len(body))) {
		t.Errorf("tunneled response differs from upstream's")
	}
	if !bytes.Equal(resp.TLS.PeerCertificates[0].Raw, leaf.Leaf.Raw) {
		t.Errorf("client saw certificate %q, want the upstream's own", resp.TLS.PeerCertificates[0].Subject)
	}
	st := h.proxy.Stats()
	if st.Tunnels != 1 || st.MITM != 0 || st.Requests != 0 || h.sink.started.Load() != 0 {
		t.Errorf("stats %+v, started %d: want one tunnel and nothing seen inside", st, h.sink.started.Load())
	}
	if n := h.mitmCA.calls.Load(); n != 0 {
		t.Errorf("LeafFor called %d times for a tunneled host", n)
	}
}

func TestUpstreamCertificateRejected(t *testing.T) {
	trusted := newTestCA(t, "trusted CA")
	rogue := newTestCA(t, "rogue CA")
	tests := []struct {
		name string
		cert *tls.Certificate
	}{
		{"unknown authority", rogue.leaf(t, gameHost)},
		{"wrong name", trusted.leaf(t, "www.example.com")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := startTLSServer(t, tt.cert, serveAsset([]byte("secret")))
			h := newHarness(t, trusted.pool, []DialRule{ruleTo(t, "", "443", srv)}, nil)
			resp, err := h.client(t).Get("https://" + gameHost + "/kcs2/img/a.png")
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, resp)
			if resp.StatusCode != http.StatusBadGateway || bytes.Contains(got, []byte("secret")) {
				t.Fatalf("status %d body %q, want 502 and no upstream bytes", resp.StatusCode, got)
			}
			logs := h.logs.FilterMessage("upstream certificate rejected").All()
			if len(logs) != 1 || logs[0].Level.String() != "warn" {
				t.Fatalf("want one warn line, got %v", logs)
			}
			fields := logs[0].ContextMap()
			if fields["host"] != gameHost || fields["error"] == "" {
				t.Errorf("log fields %v, want host and error", fields)
			}
			if st := h.proxy.Stats(); st.UpstreamTLSFailures != 1 || st.CapturesStarted != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestPlainHTTPProxying(t *testing.T) {
	body := assetBytes(7, 30<<10)
	srv, _ := startHTTPServer(t, serveAsset(body))
	h := newHarness(t, nil, []DialRule{ruleTo(t, "", "80", srv)}, nil)
	client := h.client(t)
	for _, tt := range []struct {
		host        string
		wantCapture bool
	}{
		{gameHost, true},
		{"plain.example.test", false},
	} {
		url := "http://" + tt.host + "/kcs2/img/a.png"
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, resp)
		if !bytes.Equal(got, body) || !reflect.DeepEqual(resp.Header, assetHeaders(len(body))) {
			t.Errorf("%s: response differs from upstream's: %v", tt.host, resp.Header)
		}
		if tt.wantCapture {
			if c := h.sink.next(t); c.URL != url || !c.Complete || !bytes.Equal(c.Body, body) {
				t.Errorf("capture %s complete=%v %d bytes", c.URL, c.Complete, len(c.Body))
			}
		}
	}
	h.sink.none(t)
	if n := h.sink.started.Load(); n != 1 {
		t.Errorf("Sink.Start called %d times, want once (the MITM host only)", n)
	}
}

func TestHTTP2ClientIsServedHTTP1(t *testing.T) {
	body := assetBytes(8, 10<<10)
	h, _, _ := newGame(t, serveAsset(body), nil)
	tr := h.transport()
	tr.ForceAttemptHTTP2 = true // offer h2 in ALPN
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + gameHost + "/kcs2/img/a.png")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, resp)
	if resp.ProtoMajor != 1 || !bytes.Equal(got, body) {
		t.Errorf("proto %s, %d bytes; want HTTP/1.1 (AllowHTTP2 off) and the body", resp.Proto, len(got))
	}
}
