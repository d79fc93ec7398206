package assets

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/internal/private/privatetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// testClock is a settable clock, safe for concurrent use.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// mustOpenIndex opens an index on srv's keys endpoint, persisted in dir.
func mustOpenIndex(tb testing.TB, srv *assettest.Server, dir string, h *SessionHolder, clock *testClock, log *zap.Logger) *Index {
	tb.Helper()
	ix, err := OpenIndex(IndexOptions{
		Endpoint: srv.KeysEndpoint,
		Path:     filepath.Join(dir, "asset_index.json"),
		Session:  h,
		Client:   srv.Client(),
		Now:      clock.Now,
		Logger:   log,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return ix
}

// sessionHolder holds a session signed in on srv.
func sessionHolder(srv *assettest.Server) *SessionHolder {
	h := new(SessionHolder)
	h.Set(testSession(srv))
	return h
}

func TestIndexRefresh(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	dir := t.TempDir()
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	hA, hB, hB2, hC := hashOf([]byte("a")), hashOf([]byte("b")), hashOf([]byte("b2")), hashOf([]byte("c"))
	srv.Seed("assets/kcs2/a.png", hA, 1)
	srv.Seed("assets/kcs2/b.png", hB, 2)
	h := sessionHolder(srv)
	sess, _ := h.Get()
	ix := mustOpenIndex(t, srv, dir, h, clock, nil)
	ctx := context.Background()

	// First refresh: a full listing, no since.
	if err := ix.Refresh(ctx, false); err != nil {
		t.Fatal(err)
	}
	if uri := srv.LastRequestURI(assettest.Keys); uri != assettest.KeysPath {
		t.Errorf("first request %q, want no since", uri)
	}
	if got := srv.LastHeader(assettest.Keys).Get("Authorization"); got != "Bearer "+sess.AccessToken {
		t.Errorf("Authorization = %q", got)
	}
	if !ix.Known("assets/kcs2/a.png", hA) || !ix.Known("assets/kcs2/b.png", hB) {
		t.Errorf("seeded keys unknown")
	}
	if ix.Known("assets/kcs2/a.png", hB) || ix.Known("assets/kcs2/c.png", hC) || ix.Known("assets/kcs2/a.png", "") {
		t.Errorf("Known true for a changed hash, an unknown key or no hash")
	}
	cursor := ix.Cursor()
	if cursor == 0 {
		t.Fatal("no cursor after a listing")
	}

	// Within MinInterval: nothing is sent.
	clock.Add(9 * time.Minute)
	if err := ix.Refresh(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n := srv.Requests(assettest.Keys); n != 1 {
		t.Errorf("%d keys requests within MinInterval, want 1", n)
	}

	// Later: an incremental listing from the cursor brings a new key and a
	// new version of b.
	srv.Seed("assets/kcs2/c.png", hC, 3)
	srv.Seed("assets/kcs2/b.png", hB2, 4)
	clock.Add(2 * time.Minute)
	if err := ix.Refresh(ctx, false); err != nil {
		t.Fatal(err)
	}
	if uri, want := srv.LastRequestURI(assettest.Keys), assettest.KeysPath+"?since="+strconv.FormatInt(cursor, 10); uri != want {
		t.Errorf("request %q, want %q", uri, want)
	}
	if !ix.Known("assets/kcs2/c.png", hC) || !ix.Known("assets/kcs2/b.png", hB2) || ix.Known("assets/kcs2/b.png", hB) || !ix.Known("assets/kcs2/a.png", hA) {
		t.Errorf("incremental merge wrong: c %v, b2 %v, old b %v, a %v", ix.Known("assets/kcs2/c.png", hC),
			ix.Known("assets/kcs2/b.png", hB2), ix.Known("assets/kcs2/b.png", hB), ix.Known("assets/kcs2/a.png", hA))
	}
	if ix.Cursor() <= cursor || ix.Len() != 3 {
		t.Errorf("cursor %d (was %d), len %d", ix.Cursor(), cursor, ix.Len())
	}

	// Forced: sent at once.
	if err := ix.Refresh(ctx, true); err != nil {
		t.Fatal(err)
	}
	if n := srv.Requests(assettest.Keys); n != 3 {
		t.Errorf("%d keys requests after a forced refresh, want 3", n)
	}

	// The file: 0600, no token, and a reopened index knows it all, with
	// the same cursor and the same rate limit.
	path := filepath.Join(dir, "asset_index.json")
	privatetest.WantPrivate(t, path) // 0600, or on Windows an ACL for the user only
	b, _ := os.ReadFile(path)
	for _, sec := range []string{sess.AccessToken, sess.RefreshToken, sess.DatasetToken} {
		if strings.Contains(string(b), sec) {
			t.Errorf("index file holds a token")
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
	ix2 := mustOpenIndex(t, srv, dir, h, clock, nil)
	if ix2.Cursor() != ix.Cursor() || !ix2.Known("assets/kcs2/b.png", hB2) || ix2.Len() != 3 {
		t.Errorf("reopened: cursor %d (want %d), len %d", ix2.Cursor(), ix.Cursor(), ix2.Len())
	}
	if err := ix2.Refresh(ctx, false); err != nil || srv.Requests(assettest.Keys) != 3 {
		t.Errorf("reopened index refreshed within MinInterval (%v)", err)
	}
}

func TestIndexNoSession(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	ix := mustOpenIndex(t, srv, t.TempDir(), new(SessionHolder), &testClock{t: time.Now()}, nil)
	for _, force := range []bool{false, true} {
		if err := ix.Refresh(context.Background(), force); !errors.Is(err, ErrNoSession) {
			t.Errorf("Refresh(force %v) = %v, want ErrNoSession", force, err)
		}
	}
	if srv.TotalRequests() != 0 {
		t.Errorf("keys requested without a session")
	}
}

func TestIndexRefused(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	srv.Seed("assets/kcs2/a.png", hashOf([]byte("a")), 1)
	clock := &testClock{t: time.Now()}
	dir := t.TempDir()
	ix := mustOpenIndex(t, srv, dir, sessionHolder(srv), clock, nil)
	if err := ix.Refresh(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	cursor := ix.Cursor()
	for _, tt := range []struct {
		fault assettest.Fault
		class Class
	}{
		{assettest.Fault{Status: 401}, Auth},
		{assettest.Fault{Status: 503}, Transient},
		{assettest.Fault{Status: 200, Body: "<html>"}, Transient},
		{assettest.Fault{Reset: true}, Transient},
	} {
		// Every try, since net/http itself retries a GET whose reused
		// connection was reset.
		srv.SetFaultFunc(assettest.Keys, func(*http.Request, int) *assettest.Fault { f := tt.fault; return &f })
		err := ix.Refresh(context.Background(), true)
		srv.ClearFaults()
		var se *StatusError
		switch {
		case err == nil:
			t.Errorf("%+v: no error", tt.fault)
		case errors.As(err, &se) && se.Class != tt.class:
			t.Errorf("%+v: class %s, want %s", tt.fault, se.Class, tt.class)
		case Classify(0, err) != tt.class && se == nil:
			t.Errorf("%+v: %v classifies as %s, want %s", tt.fault, err, Classify(0, err), tt.class)
		}
		if ix.Cursor() != cursor || !ix.Known("assets/kcs2/a.png", hashOf([]byte("a"))) {
			t.Errorf("%+v: a failed refresh changed the index", tt.fault)
		}
	}
	// A failed try still counts for MinInterval.
	before := srv.Requests(assettest.Keys)
	if err := ix.Refresh(context.Background(), false); err != nil || srv.Requests(assettest.Keys) != before {
		t.Errorf("unforced refresh right after a failure sent a request (%v)", err)
	}
}

func TestIndexBrokenFileIgnored(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	for name, content := range map[string]string{
		"garbage":     "{not json",
		"old version": `{"version":99,"since":5,"items":[{"key":"k","content_hash":"h"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "asset_index.json"), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zapcore.WarnLevel)
			ix := mustOpenIndex(t, srv, dir, sessionHolder(srv), &testClock{t: time.Now()}, zap.New(core))
			if ix.Len() != 0 || ix.Cursor() != 0 {
				t.Errorf("broken file loaded: len %d, cursor %d", ix.Len(), ix.Cursor())
			}
			if logs.FilterMessageSnippet("unreadable asset index").Len() != 1 {
				t.Errorf("broken file not logged: %v", logs.All())
			}
			// The next refresh is a full one and replaces the file.
			if err := ix.Refresh(context.Background(), false); err != nil {
				t.Fatal(err)
			}
			if ix2 := mustOpenIndex(t, srv, dir, sessionHolder(srv), &testClock{t: time.Now()}, zap.New(core)); ix2.Cursor() == 0 {
				t.Errorf("file not rewritten")
			}
		})
	}
}

func TestIndexFullListingReplaces(t *testing.T) {
	// A full listing (the first one, or any from a server that ignores
	// since) replaces what the index held.
	srv := assettest.NewServer()
	defer srv.Close()
	hA := hashOf([]byte("a"))
	srv.Seed("assets/kcs2/a.png", hA, 1)
	ix := mustOpenIndex(t, srv, t.TempDir(), sessionHolder(srv), &testClock{t: time.Now()}, nil)
	ix.Add("assets/kcs2/gone.png", hA, 1)
	if err := ix.Refresh(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if ix.Known("assets/kcs2/gone.png", hA) || !ix.Known("assets/kcs2/a.png", hA) {
		t.Errorf("a full listing did not replace the index")
	}
	ix.Add("assets/kcs2/new.png", hA, 1)
	if !ix.Known("assets/kcs2/new.png", hA) {
		t.Errorf("Add not known")
	}
}

// An upload recorded while a full listing is on its way survives it: the listing was taken
// before the upload, so it cannot say the key is gone (a repeat of the asset would be uploaded
// again).
func TestIndexKeepsAddsDuringRefresh(t *testing.T) {
	asked, answer := make(chan struct{}), make(chan struct{})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(asked)
		<-answer
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"items":[],"incremental":false,"snapshotUpperMs":1}`)
	}))
	defer api.Close()
	ix, err := OpenIndex(IndexOptions{Endpoint: api.URL + "/api/asset-sync/keys", Session: holding(stubSession(t))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ix.Refresh(context.Background(), true) }()
	<-asked
	h := hashOf([]byte("uploaded"))
	ix.Add("assets/kcs2/uploaded.png", h, 8)
	close(answer)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !ix.Known("assets/kcs2/uploaded.png", h) {
		t.Error("an upload recorded during the refresh was dropped by the listing")
	}
	ix.Add("assets/kcs2/after.png", h, 8) // no refresh under way: nothing kept aside
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.addedDuring != nil {
		t.Errorf("addedDuring = %v after the refresh, want nil", ix.addedDuring)
	}
}

func TestIndexWithoutEndpoint(t *testing.T) {
	ix, err := OpenIndex(IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Refresh(context.Background(), true); err != nil {
		t.Errorf("Refresh without endpoint = %v", err)
	}
	if _, err := OpenIndex(IndexOptions{Endpoint: "not a url"}); err == nil {
		t.Errorf("bad endpoint accepted")
	}
	if _, err := OpenIndex(IndexOptions{Endpoint: "https://fusou.dev/api/asset-sync/keys"}); err == nil {
		t.Errorf("endpoint without session holder accepted")
	}
}

// TestIndexConcurrent runs Known, Add and Refresh together under -race.
func TestIndexConcurrent(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	ix := mustOpenIndex(t, srv, t.TempDir(), sessionHolder(srv), &testClock{t: time.Now()}, nil)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				key := "assets/k" + strconv.Itoa(i*100+j) + ".png"
				srv.Seed(key, hashOf([]byte(key)), 1)
				ix.Add(key, hashOf([]byte(key)), 1)
				ix.Known(key, hashOf([]byte(key)))
				if j%5 == 0 {
					if err := ix.Refresh(context.Background(), true); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := ix.Refresh(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if ix.Len() != 80 {
		t.Errorf("Len = %d, want 80", ix.Len())
	}
}
