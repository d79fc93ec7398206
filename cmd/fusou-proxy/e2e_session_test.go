package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// A session handed over for good (the `session set` default) keeps uploading across three
// expiries of its access token with no new post: each 401 leads to one refresh through the
// fake's Supabase, whose rotated refresh token replaces the old one, while the proxy is
// capturing.
func TestEndToEndProxyOwnedSessionLivesAcrossExpiries(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	var mu sync.Mutex
	now := time.Now()
	api.SetNow(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	tok := api.NewSession()
	in := startInstance(t, game, api, fmt.Sprintf("\n[app.auth]\nsupabase_url = %q\nsupabase_anon_key = %q\n",
		api.SupabaseURL(), assettest.AnonKey))
	body, _ := json.Marshal(map[string]string{"access_token": tok.Access, "refresh_token": tok.Refresh, "dataset_token": tok.Dataset})
	in.cli(string(body), "session", "set")
	if st := in.cli("", "status"); !strings.Contains(st, "owned and refreshed by the proxy") {
		t.Fatalf("status does not name a proxy-owned session:\n%s", st)
	}
	c := in.client()

	paths := []string{"/kcs2/img/title/01.png", "/kcs2/img/title/02.png", "/kcs2/resources/ship/full/0001_1234.png"}
	for i, p := range paths {
		// The fake's clock passes the access token's expiry (1 h, plus the 30 s leeway): the
		// proxy's token is refused from now on, until it refreshes.
		advance(61 * time.Minute)
		fetch(t, c, "https://"+gameHost+p, game.assets[p])
		key, hash := "assets"+p, sha(game.assets[p])
		waitFor(t, p+" uploaded", func() bool { return api.UploadCount(key, hash) == 1 })
		if got := api.Refreshes(); got != i+1 {
			t.Fatalf("after expiry %d: %d refreshes, want %d", i+1, got, i+1)
		}
	}
	if n := in.status().Pending.Count; n != 0 {
		t.Errorf("%d entries still pending", n)
	}
	in.stop()
	logs := in.logs.String()
	if n := strings.Count(logs, "session refreshed"); n != 3 {
		t.Errorf("%d 'session refreshed' log lines, want 3", n)
	}
	if strings.Contains(logs, "Session cleared") {
		t.Error("the session was cleared: a refresh token was reused or refused")
	}
	// The refreshed tokens are not known here, but every JWT begins with `{"alg"` in base64.
	assertNoSecrets(t, in.data, tok.Access, tok.Refresh, tok.Dataset, "eyJhbGci")
	for _, secret := range []string{tok.Access, tok.Refresh, tok.Dataset} {
		if strings.Contains(logs, secret) {
			t.Error("a token reached the log")
		}
	}
}
