package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/proxy"
)

// More end-to-end flows (GitHub issue 7, part 1), with the harness of e2e_test.go: the real
// binary, the local game server, the FUSOU API fake, and the CLI as a user types it.

// fullStatus is `fusou-proxy status --json`: the CLI's own document plus the proxy's counters.
type fullStatus struct {
	statusDoc
	Proxy proxy.Stats `json:"proxy"`
}

func (in *instance) fullStatus() fullStatus {
	in.t.Helper()
	var st fullStatus
	if err := json.Unmarshal([]byte(in.cli("", "status", "--json")), &st); err != nil {
		in.t.Fatal(err)
	}
	return st
}

// pendingRow is one line of `fusou-proxy pending list`.
type pendingRow struct {
	ID, Key, LastError string
	Attempts           int
}

// pendingList runs `fusou-proxy pending list` (the store read directly, beside the running
// proxy) and parses its table.
func (in *instance) pendingList() []pendingRow {
	in.t.Helper()
	out := in.cli("", "pending", "list")
	lines := strings.Split(out, "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "ID") {
		in.t.Fatalf("pending list printed no table:\n%s", out)
	}
	var rows []pendingRow
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 5 || len(f[0]) != 36 { // a UUID; the summary line follows a blank one
			continue
		}
		r := pendingRow{ID: f[0], Key: f[1], LastError: strings.Join(f[5:], " ")}
		if _, err := fmt.Sscan(f[4], &r.Attempts); err != nil {
			in.t.Fatalf("pending list: attempts %q: %v\n%s", f[4], err, out)
		}
		rows = append(rows, r)
	}
	return rows
}

// pendingShow is `fusou-proxy pending show ID`, decoded.
func (in *instance) pendingShow(id string) (attempts int, lastError string) {
	in.t.Helper()
	var doc struct {
		AttemptCount *int   `json:"attempt_count"`
		LastError    string `json:"last_error"`
	}
	out := in.cli("", "pending", "show", id)
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.AttemptCount == nil {
		in.t.Fatalf("pending show %s: %v\n%s", id, err, out)
	}
	return *doc.AttemptCount, doc.LastError
}

// restart runs `fusou-proxy run` again on the same configuration and data directory, once the
// previous process has ended (stop or kill). in.logs then holds the new process's log and the
// old one is appended to in's log history (see allLogs).
func (in *instance) restart() {
	in.t.Helper()
	if in.cmd.ProcessState == nil {
		in.t.Fatal("restart: the previous fusou-proxy is still running")
	}
	logHistory.Store(in, allLogs(in))
	in.cmd = in.command("run", "--log-format", "json", "--log-level", "debug")
	in.logs, in.wait = startRun(in.t, in.cmd)
	// Cleanups run last-registered first: stop this process gracefully before startRun's
	// cleanup would kill it.
	in.t.Cleanup(in.stop)
	if !strings.Contains(in.logs.String(), "fusou-proxy started") {
		_ = in.wait()
		in.t.Fatalf("fusou-proxy did not start again on %s:\n%s", in.data, in.logs)
	}
}

// logHistory keeps, per instance, the logs of its processes before the current one.
var logHistory sync.Map // *instance → string

// allLogs is every log line of every process this instance has run.
func allLogs(in *instance) string {
	old, _ := logHistory.Load(in)
	s, _ := old.(string)
	return s + in.logs.String()
}

// kill ends the process at once, as a crash, an OOM kill or a forced "end task" would:
// SIGKILL, or TerminateProcess on Windows. What the process wrote stays in the kernel's page
// cache: a power cut, which would also test the fsyncs, is beyond it.
func (in *instance) kill() {
	in.t.Helper()
	if err := in.cmd.Process.Kill(); err != nil {
		in.t.Fatal(err)
	}
	err := in.wait()
	if !killedHard(in.cmd.ProcessState) {
		in.t.Fatalf("fusou-proxy was not killed: %v\n%s", err, in.logs)
	}
}

// fetch GETs rawURL through c and fails the test unless it answers 200 with want.
func fetch(t *testing.T, c *http.Client, rawURL string, want []byte) {
	t.Helper()
	resp, err := c.Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, want) {
		t.Fatalf("GET %s: %d, %d bytes, %v; want 200 and the %d bytes of the asset", rawURL, resp.StatusCode, len(got), err, len(want))
	}
}

// pngAssets are the game server's captured assets (its /kcsapi/ path is not one).
func (g *gameServer) pngAssets() map[string][]byte {
	m := map[string][]byte{}
	for p, b := range g.assets {
		if strings.HasSuffix(p, ".png") {
			m[p] = b
		}
	}
	return m
}

// tokenRecorder collects the upload tokens the fake hands out, as it sees them come back at
// stage 2, so that a test can look for them on disk and in the logs.
type tokenRecorder struct {
	mu     sync.Mutex
	tokens map[string]bool
}

func recordUploadTokens(api *assettest.Server) *tokenRecorder {
	r := &tokenRecorder{tokens: map[string]bool{}}
	api.SetFaultFunc(assettest.Upload, func(req *http.Request, _ int) *assettest.Fault {
		r.mu.Lock()
		r.tokens[req.Header.Get("X-Upload-Token")] = true
		r.mu.Unlock()
		return nil
	})
	return r
}

func (r *tokenRecorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for tok := range r.tokens {
		if tok != "" {
			out = append(out, tok)
		}
	}
	return out
}

// assertNoSecretsAnywhere checks, once the instance has stopped, that none of secrets is in a
// file under its data directory or its home, nor in any of its processes' logs.
func assertNoSecretsAnywhere(t *testing.T, in *instance, secrets ...string) {
	t.Helper()
	if in.cmd.ProcessState == nil {
		t.Fatal("assertNoSecretsAnywhere: stop the instance first, so that everything is on disk")
	}
	if len(secrets) == 0 {
		t.Fatal("assertNoSecretsAnywhere: no secrets to look for")
	}
	assertNoSecrets(t, in.data, secrets...)
	assertNoSecrets(t, in.home, secrets...)
	logs := allLogs(in)
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a secret (%.8s…) reached the log", s)
		}
	}
}

// waitFirstPass waits for the retry pass that a posted session triggers to end, so that the
// next captures are delivered by the live upload workers alone.
func (in *instance) waitFirstPass() {
	in.t.Helper()
	waitFor(in.t, "the session's retry pass", func() bool {
		st := in.fullStatus()
		return st.Retry.LastPass != nil && !st.Retry.Running
	})
}

// Server errors: the live uploads fail with 503 and stay pending with the attempt counted and
// the reason recorded; once the server is back, `retry --wait` drains them, each asset reaching
// the server exactly once.
func TestEndToEndServerErrorThenRetry(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	tok := api.NewSession()
	access, refresh, dataset := tok.Access, tok.Refresh, tok.Dataset
	uploadTokens := recordUploadTokens(api)
	api.SetFaultFunc(assettest.Handshake, func(*http.Request, int) *assettest.Fault { return &assettest.Fault{Status: 503} })
	in := startInstance(t, game, api, "")
	in.cli(sessionJSON(tok), "session", "set")
	in.waitFirstPass()

	c := in.client()
	pngs := game.pngAssets()
	for p, want := range pngs {
		fetch(t, c, "https://"+gameHost+p+"?version=3", want)
	}
	// Each live upload is tried (with its quick in-call retries), fails, and is recorded.
	waitFor(t, "the failed attempts to be recorded", func() bool {
		rows := in.pendingList()
		for _, r := range rows {
			if r.Attempts == 0 {
				return false
			}
		}
		return len(rows) == len(pngs)
	})
	if n := api.Requests(assettest.Handshake); n < len(pngs) {
		t.Fatalf("%d handshakes reached the server, want at least %d", n, len(pngs))
	}
	keys := map[string]bool{}
	for _, r := range in.pendingList() {
		keys[r.Key] = true
		if r.Attempts != 1 || !strings.Contains(r.LastError, "503") {
			t.Errorf("pending list: %s has %d attempts, last error %q; want 1 and the 503", r.Key, r.Attempts, r.LastError)
		}
		if n, lastErr := in.pendingShow(r.ID); n != 1 || !strings.Contains(lastErr, "503") {
			t.Errorf("pending show %s: attempt_count %d, last_error %q; want 1 and the 503", r.ID, n, lastErr)
		}
	}
	for p := range pngs {
		if !keys["assets"+p] {
			t.Errorf("pending list lacks assets%s", p)
		}
	}
	if api.Uploads() != 0 {
		t.Fatalf("%d uploads stored while every handshake failed", api.Uploads())
	}
	waitFor(t, "a `Saved pending upload due to handshake: 503` line per asset", func() bool {
		return strings.Count(in.logs.String(), "Saved pending upload due to handshake: 503") == len(pngs)
	})

	// The server recovers; a forced pass drains the outbox.
	api.SetFaultFunc(assettest.Handshake, nil)
	out := in.cli("", "retry", "--wait")
	if !strings.Contains(out, fmt.Sprintf("succeeded %d, failed 0", len(pngs))) || !strings.Contains(out, "remaining 0") {
		t.Errorf("retry --wait printed %q; want %d succeeded and 0 remaining", out, len(pngs))
	}
	for p, want := range pngs {
		if n := api.UploadCount("assets"+p, sha(want)); n != 1 {
			t.Errorf("%s is on the server %d times, want 1", p, n)
		}
	}
	if rows := in.pendingList(); len(rows) != 0 {
		t.Errorf("still pending after the drain: %+v", rows)
	}
	waitFor(t, "a `Successfully retried upload` line per asset", func() bool {
		return strings.Count(in.logs.String(), "Successfully retried upload") == len(pngs)
	})

	in.stop()
	tokens := uploadTokens.list()
	if len(tokens) != len(pngs) {
		t.Fatalf("the fake saw %d upload tokens, want %d", len(tokens), len(pngs))
	}
	assertNoSecretsAnywhere(t, in, append(tokens, access, refresh, dataset)...)
}

// An expired or revoked session: captures wait without their attempts being counted (the
// server's 401 is not the asset's fault), a retry pass stops at once, and a new valid session
// drains them.
func TestEndToEndRevokedTokenThenNewSession(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	oldTok, newTok := api.NewSession(), api.NewSession()
	oldAccess, oldRefresh, newAccess, newRefresh := oldTok.Access, oldTok.Refresh, newTok.Access, newTok.Refresh
	uploadTokens := recordUploadTokens(api)
	in := startInstance(t, game, api, "")
	in.cli(sessionJSON(oldTok), "session", "set")
	in.waitFirstPass()
	api.RevokeToken(oldAccess) // the session expires on the server's side

	c := in.client()
	pngs := game.pngAssets()
	for p, want := range pngs {
		fetch(t, c, "https://"+gameHost+p, want)
	}
	waitFor(t, "the refused live uploads", func() bool {
		return strings.Count(in.logs.String(), "Saved pending upload due to handshake: 401") == len(pngs)
	})
	if n := api.Requests(assettest.Handshake); n != len(pngs) {
		t.Errorf("%d handshakes reached the server, want %d (one each; auth is never retried in-call)", n, len(pngs))
	}
	check := func(when string) {
		t.Helper()
		rows := in.pendingList()
		if len(rows) != len(pngs) {
			t.Fatalf("%s: %d pending entries, want %d", when, len(rows), len(pngs))
		}
		for _, r := range rows {
			if n, lastErr := in.pendingShow(r.ID); n != 0 {
				t.Errorf("%s: pending show %s (%s): attempt_count %d, last_error %q; want 0: a 401 is not counted", when, r.ID, r.Key, n, lastErr)
			}
		}
	}
	check("after the live uploads")

	// A forced pass with the stale session stops at its first 401 and counts nothing either.
	before := api.Requests(assettest.Handshake)
	out, code := in.cliCode("", "retry", "--wait")
	if code != 1 {
		t.Errorf("retry --wait of a pass stopped for auth exited %d, want 1", code)
	}
	if !strings.Contains(out, "stopped: auth") || !strings.Contains(out, fmt.Sprintf("remaining %d", len(pngs))) {
		t.Errorf("retry --wait with a revoked token printed %q; want the pass stopped for auth", out)
	}
	if n := api.Requests(assettest.Handshake) - before; n < 1 {
		t.Errorf("the pass sent %d handshakes, want at least 1 (it tried the stale session)", n)
	} // how few at most: TestEndToEndAuthStopsThePassAtOnce
	check("after a pass with the revoked token")
	if api.Uploads() != 0 {
		t.Fatalf("%d uploads stored with a revoked token", api.Uploads())
	}

	// The FUSOU app posts a fresh session: the outbox drains with it.
	in.cli(sessionJSON(newTok), "session", "set")
	waitFor(t, "the drain with the new session", func() bool { return in.fullStatus().Pending.Count == 0 })
	for p, want := range pngs {
		if n := api.UploadCount("assets"+p, sha(want)); n != 1 {
			t.Errorf("%s is on the server %d times, want 1", p, n)
		}
	}
	if got := api.LastHeader(assettest.Upload).Get("Authorization"); got != "Bearer "+newAccess {
		t.Errorf("stage 2 sent Authorization %.20q…, want the new token", got)
	}

	in.stop()
	assertNoSecretsAnywhere(t, in, append(uploadTokens.list(), oldAccess, oldRefresh, newAccess, newRefresh)...)
}

// A retry pass that meets a 401 sends nothing more (SPEC §5, §7: auth stops the pass; the
// uploads already under way finish). With retry.concurrency 2 and three waiting entries, at
// most two handshakes may carry the stale token.
func TestEndToEndAuthStopsThePassAtOnce(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	tok := api.NewSession()
	access := tok.Access
	in := startInstance(t, game, api, "")
	in.cli(sessionJSON(tok), "session", "set")
	in.waitFirstPass()
	api.RevokeToken(access)
	c := in.client()
	pngs := game.pngAssets()
	for p, want := range pngs {
		fetch(t, c, "https://"+gameHost+p, want)
	}
	waitFor(t, "the refused live uploads", func() bool {
		return strings.Count(in.logs.String(), "Saved pending upload due to handshake: 401") == len(pngs)
	})
	before := api.Requests(assettest.Handshake)
	if out, _ := in.cliCode("", "retry", "--wait"); !strings.Contains(out, "stopped: auth") {
		t.Fatalf("retry --wait printed %q; want the pass stopped for auth", out)
	}
	if n := api.Requests(assettest.Handshake) - before; n > 2 {
		t.Errorf("the pass sent %d handshakes with a refused token; want at most 2 (retry.concurrency)", n)
	}
}

// A host outside mitm_hosts is tunneled untouched: a client that trusts only that server's own
// certificate (not the fusou CA) gets through and sees that certificate, and nothing is
// captured, though the path is one the game's would be captured at.
func TestEndToEndPassthroughOfOtherHosts(t *testing.T) {
	const otherHost = "example.test"
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()

	body := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte("other"), 4000)...)
	cert, certPEM := selfSigned(t, otherHost)
	other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(body)
	}))
	other.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	other.StartTLS()
	defer other.Close()
	_, otherPort, err := net.SplitHostPort(other.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}

	// The harness's config routes only the game host; add a rule for the other one.
	in := startInstance(t, game, api, "")
	in.stop()
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	rule := fmt.Sprintf(`connect_to = ["%s:443:127.0.0.1:%s", "%s:443:127.0.0.1:%s"]`, gameHost, game.port(), otherHost, otherPort)
	edited := strings.Replace(string(cfg), fmt.Sprintf(`connect_to = ["%s:443:127.0.0.1:%s"]`, gameHost, game.port()), rule, 1)
	if edited == string(cfg) {
		t.Fatalf("the harness's config has no connect_to line to extend:\n%s", cfg)
	}
	if err := os.WriteFile(in.config, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	in.restart()

	onlyOther := x509.NewCertPool()
	onlyOther.AppendCertsFromPEM(certPEM)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: in.proxyAddr}),
		TLSClientConfig: &tls.Config{RootCAs: onlyOther},
	}}
	resp, err := c.Get("https://" + otherHost + "/kcs2/img/title/01.png")
	if err != nil {
		t.Fatalf("through the proxy, with only %s's certificate trusted: %v", otherHost, err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, body) {
		t.Fatalf("%s: %d, %d bytes; want 200 and its %d bytes", otherHost, resp.StatusCode, len(got), len(body))
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || !bytes.Equal(resp.TLS.PeerCertificates[0].Raw, cert.Certificate[0]) {
		t.Fatal("the client did not see the server's own certificate")
	}
	// The capture decision is taken before the response head reaches the client, so the
	// counters are final now.
	st := in.fullStatus()
	if st.Proxy.Tunnels != 1 || st.Proxy.MITM != 0 || st.Proxy.CapturesStarted != 0 || st.Sync["captured"] != 0 || st.Pending.Count != 0 {
		t.Fatalf("after the passthrough: tunnels %d, mitm %d, captures %d/%d, pending %d; want 1, 0, 0/0, 0",
			st.Proxy.Tunnels, st.Proxy.MITM, st.Proxy.CapturesStarted, st.Sync["captured"], st.Pending.Count)
	}

	// The same path on the game host is decrypted and captured: the counters above could move.
	fetch(t, in.client(), "https://"+gameHost+"/kcs2/img/title/01.png", game.assets["/kcs2/img/title/01.png"])
	if st := in.fullStatus(); st.Proxy.MITM != 1 || st.Proxy.CapturesStarted != 1 {
		t.Errorf("the game host: mitm %d, captures %d; want 1 and 1", st.Proxy.MITM, st.Proxy.CapturesStarted)
	}
	waitFor(t, "the game asset's commit", func() bool { return in.fullStatus().Pending.Count == 1 })
}

// An upstream whose certificate the proxy does not trust (not in upstream_ca_file, not a system
// root) is refused: the client gets a 502 that says why, the log has a line about the upstream
// certificate, and nothing is captured.
func TestEndToEndUntrustedUpstreamRefused(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	// The proxy trusts another certificate for the game host than the one the server shows.
	_, otherPEM := selfSigned(t, gameHost)
	impostor := *game
	impostor.caFile = filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(impostor.caFile, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	in := startInstance(t, &impostor, api, "")

	resp, err := in.client().Get("https://" + gameHost + "/kcs2/img/title/01.png")
	if err != nil {
		t.Fatalf("the client should get the proxy's 502, got: %v", err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(msg), "certificate") {
		t.Fatalf("got %d %q; want 502 naming the certificate", resp.StatusCode, msg)
	}
	// The line is written before the 502 is sent; the test reads the log through a pipe.
	waitFor(t, "a log line about the upstream certificate of "+gameHost, func() bool {
		for _, l := range strings.Split(in.logs.String(), "\n") {
			if strings.Contains(l, "upstream certificate rejected") && strings.Contains(l, gameHost) {
				return true
			}
		}
		return false
	})
	st := in.fullStatus()
	if st.Proxy.UpstreamTLSFailures != 1 || st.Proxy.CapturesStarted != 0 || st.Sync["captured"] != 0 || st.Pending.Count != 0 {
		t.Errorf("after the refusal: TLS failures %d, captures %d/%d, pending %d; want 1, 0/0, 0",
			st.Proxy.UpstreamTLSFailures, st.Proxy.CapturesStarted, st.Sync["captured"], st.Pending.Count)
	}
	if api.TotalRequests() != 0 {
		t.Errorf("%d requests reached the API", api.TotalRequests())
	}
}
