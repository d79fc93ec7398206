package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
)

// The shutdown every stop event leads to, run in-process so that it is tested on every OS
// whatever signals the platform (or wine) can deliver: `run` waits on a context that a stop
// signal ends, and here the test ends it, with a capture waiting for a session. run must return
// nil with the capture still pending, no temp file left, and the store's lock released.
func TestRunStopsCleanlyWhenItsContextEnds(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	data, proxyAddr := t.TempDir(), freePort(t)
	// No keychain: a test must not touch the machine's (see userEnv).
	cfg := writeInstanceConfig(t, game, api, proxyAddr, freePort(t), "\n[app.auth]\nremember_session = false\n")
	args := []string{"--config", cfg, "--data-dir", data}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	root := newRootCommand(strings.NewReader(""), logs, logs)
	root.SetArgs(append([]string{"run", "--log-format", "json", "--log-level", "debug"}, args...))
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	waitFor(t, "run to start", func() bool { return strings.Contains(logs.String(), "fusou-proxy started") })

	ca, err := os.ReadFile(filepath.Join(data, datadir.CADir, "fusou-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr}), TLSClientConfig: &tls.Config{RootCAs: pool}}}
	p := "/kcs2/img/title/01.png"
	fetch(t, c, "https://"+gameHost+p, game.assets[p])
	c.CloseIdleConnections()
	waitFor(t, "the capture to be saved", func() bool { return strings.Contains(logs.String(), "Saved pending upload due to") })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("run still going 15 s after its context ended\n%s", logs)
	}
	if !strings.Contains(logs.String(), "fusou-proxy stopped") {
		t.Errorf("no stop line in the log:\n%s", logs)
	}
	filepath.Walk(data, func(path string, fi os.FileInfo, err error) error {
		if err == nil && strings.Contains(fi.Name(), ".tmp-") {
			t.Errorf("the stop left %s", path)
		}
		return nil
	})
	// The store is free (purge refuses while an instance holds it) and the capture is in it.
	var out strings.Builder
	if code := Main(append([]string{"pending", "purge", "--all"}, args...), strings.NewReader(""), &out, &out); code != 0 || !strings.Contains(out.String(), "purged 1") {
		t.Errorf("pending purge --all after the stop: exit %d, %q; want 0 and the one capture purged", code, out.String())
	}
}
