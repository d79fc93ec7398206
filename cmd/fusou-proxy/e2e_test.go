package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/internal/truststore/nsstest"
)

// The end-to-end tests run the real binary as a user would, against a local HTTPS "game
// server" (reached through connect_to, trusted through upstream_ca_file) and the FUSOU API
// fake, with real clients: Go's, curl and headless Chromium.

const gameHost = "w01y.kancolle-server.com"

// gameServer serves a few game assets over TLS with its own CA.
type gameServer struct {
	*httptest.Server
	assets map[string][]byte // URL path → body
	caFile string            // PEM of the server's certificate, for upstream_ca_file
}

func newGameServer(t *testing.T) *gameServer {
	t.Helper()
	g := &gameServer{assets: map[string][]byte{}}
	for i, p := range []string{"/kcs2/img/title/01.png", "/kcs2/img/title/02.png", "/kcs2/resources/ship/full/0001_1234.png"} {
		g.assets[p] = append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{byte(i + 1)}, 20000+i*1000)...)
	}
	g.assets["/kcsapi/api_port/port"] = []byte(`svdata={"api_result":1}`)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/index.html" {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, `<!doctype html><html><body><h1>game</h1>`)
			for p := range g.assets {
				if strings.HasSuffix(p, ".png") {
					fmt.Fprintf(w, `<img src="%s?version=1">`, p)
				}
			}
			fmt.Fprint(w, `</body></html>`)
			return
		}
		body, ok := g.assets[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	})
	cert, certPEM := selfSigned(t, gameHost)
	g.Server = httptest.NewUnstartedServer(mux)
	g.Server.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	g.Server.StartTLS()
	t.Cleanup(g.Close)
	g.caFile = filepath.Join(t.TempDir(), "game-ca.pem")
	if err := os.WriteFile(g.caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

// selfSigned makes a certificate for host that is its own root: the game server's identity,
// trusted by the proxy through upstream_ca_file.
func selfSigned(t *testing.T, host string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func (g *gameServer) port() string {
	_, port, _ := net.SplitHostPort(g.Listener.Addr().String())
	return port
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// instance is one running fusou-proxy.
type instance struct {
	t           *testing.T
	home, data  string
	config      string
	proxyAddr   string
	controlAddr string
	api         *assettest.Server
	game        *gameServer
	logs        *syncBuffer
	cmd         *exec.Cmd
	wait        func() error
}

// startInstance writes a config pointing the game host at game and the API at api, and
// starts `fusou-proxy run`.
func startInstance(t *testing.T, game *gameServer, api *assettest.Server, extraTOML string) *instance {
	t.Helper()
	return startInstanceWith(t, game, api, extraTOML, nil)
}

// startInstanceWith is startInstance; wrap, when not nil, may change the command before it
// starts (e.g. run it under a lower file-descriptor limit).
func startInstanceWith(t *testing.T, game *gameServer, api *assettest.Server, extraTOML string, wrap func(*exec.Cmd)) *instance {
	t.Helper()
	in := &instance{t: t, home: t.TempDir(), data: t.TempDir(), api: api, game: game,
		proxyAddr: freePort(t), controlAddr: freePort(t)}
	in.config = writeInstanceConfig(t, game, api, in.proxyAddr, in.controlAddr, extraTOML)
	in.cmd = in.command("run", "--log-format", "json", "--log-level", "debug")
	if wrap != nil {
		wrap(in.cmd)
	}
	in.logs, in.wait = startRun(t, in.cmd)
	t.Cleanup(func() { in.stop() })
	return in
}

// writeInstanceConfig writes a configs.toml that routes the game host to game and uploads to
// api, and returns its path.
func writeInstanceConfig(t *testing.T, game *gameServer, api *assettest.Server, proxyAddr, controlAddr, extraTOML string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "configs.toml")
	cfg := fmt.Sprintf(`[proxy]
listen = %q
upstream_ca_file = %q
connect_to = ["%s:443:127.0.0.1:%s"]

[app.asset_sync]
asset_upload_endpoint = %q
asset_existing_keys_endpoint = %q

[app.asset_sync.retry]
interval_seconds = 3600

[control]
listen = %q
%s`, proxyAddr, game.caFile, gameHost, game.port(), api.UploadEndpoint, api.KeysEndpoint, controlAddr, extraTOML)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// command is the binary with this instance's config and data dir.
func (in *instance) command(args ...string) *exec.Cmd {
	return command(in.t, in.home, nil, append(args, "--config", in.config, "--data-dir", in.data)...)
}

// cli runs a command to completion and returns its stdout; it fails the test on an error.
func (in *instance) cli(stdin string, args ...string) string {
	in.t.Helper()
	cmd := in.command(args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		in.t.Fatalf("fusou-proxy %s: %v\nstdout: %s\nstderr: %s\nlogs:\n%s", strings.Join(args, " "), err, out.String(), errb.String(), in.logs)
	}
	return out.String()
}

// cliCode runs a command to completion and returns its stdout and exit code, for commands
// whose failure is the point.
func (in *instance) cliCode(stdin string, args ...string) (string, int) {
	in.t.Helper()
	cmd := in.command(args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	_ = cmd.Run()
	return out.String(), cmd.ProcessState.ExitCode()
}

func (in *instance) stop() {
	if in.cmd.ProcessState != nil {
		return
	}
	if err := interrupt(in.cmd.Process); err != nil {
		in.t.Errorf("stop fusou-proxy: %v", err)
	}
	if err := in.wait(); err != nil {
		in.t.Errorf("fusou-proxy run exited with %v", err)
	}
}

// client is Go's HTTP client through the proxy, trusting the exported CA.
func (in *instance) client() *http.Client {
	in.t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(in.cli("", "ca", "export"))) {
		in.t.Fatal("ca export printed no certificate")
	}
	proxyURL := &url.URL{Scheme: "http", Host: in.proxyAddr}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(proxyURL),
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
}

// metrics scrapes GET /metrics with the control token.
func (in *instance) metrics() string {
	in.t.Helper()
	tok, err := os.ReadFile(filepath.Join(in.data, "control.token"))
	if err != nil {
		in.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+in.controlAddr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		in.t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

type statusJSON struct {
	Pending struct {
		Count int `json:"count"`
	} `json:"pending"`
	Sync map[string]int64 `json:"sync"`
}

func (in *instance) status() statusJSON {
	in.t.Helper()
	var st statusJSON
	if err := json.Unmarshal([]byte(in.cli("", "status", "--json")), &st); err != nil {
		in.t.Fatal(err)
	}
	return st
}

// waitFor polls cond with a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sessionJSON is the session document for tok, refreshed by its caller (so a revoked token
// stays revoked, as when the FUSOU app has not posted a new one yet).
func sessionJSON(tok assettest.Tokens) string {
	b, _ := json.Marshal(map[string]any{"access_token": tok.Access, "refresh_token": tok.Refresh,
		"dataset_token": tok.Dataset, "auto_refresh": false})
	return string(b)
}

func TestEndToEndGoClientNoSessionThenSession(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	tok := api.NewSession()
	in := startInstance(t, game, api, "")
	c := in.client()

	for p, want := range game.assets {
		resp, err := c.Get("https://" + gameHost + p)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, want) || resp.Header.Get("Content-Length") != fmt.Sprint(len(want)) {
			t.Fatalf("%s through the proxy: %d bytes, Content-Length %q; want %d bytes, identical", p, len(got), resp.Header.Get("Content-Length"), len(want))
		}
	}
	// Three PNGs are captured; /kcsapi/ is not. Without a session they wait, and nothing
	// reaches the API.
	waitFor(t, "3 pending entries", func() bool { return in.status().Pending.Count == 3 })
	if n := api.TotalRequests(); n != 0 {
		t.Fatalf("%d API requests without a session", n)
	}
	list := in.cli("", "pending", "list")
	if !strings.Contains(list, "assets/kcs2/img/title/01.png") || strings.Contains(list, "kcsapi") {
		t.Errorf("pending list:\n%s", list)
	}

	in.cli(sessionJSON(tok), "session", "set")
	waitFor(t, "the uploads", func() bool { return in.status().Pending.Count == 0 })
	for p, want := range game.assets {
		if strings.HasPrefix(p, "/kcsapi/") {
			continue
		}
		if n := api.UploadCount("assets"+p, sha(want)); n != 1 {
			t.Errorf("%s uploaded %d times, want 1", p, n)
		}
	}
	out := in.cli("", "retry", "--wait")
	if !strings.Contains(out, "remaining 0") {
		t.Errorf("retry --wait printed %q", out)
	}
	if st := in.cli("", "status"); !strings.Contains(st, "session:  set") || !strings.Contains(st, "pending:  0 entries") {
		t.Errorf("status:\n%s", st)
	}
	metrics := in.metrics()
	for _, want := range []string{`fusou_uploads_total{outcome="success"} 3`, "fusou_captures_total 3",
		"fusou_pending_entries 0", "fusou_retry_passes_total", "fusou_leaf_cache_hits_total", "fusou_retry_pass_duration_seconds_count"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The same assets again: known, no new upload.
	for p := range game.assets {
		resp, err := c.Get("https://" + gameHost + p)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	waitFor(t, "the repeat captures to settle", func() bool { return in.status().Sync["already_known"] >= 3 })
	if n := api.Requests(assettest.Upload); n != 3 {
		t.Errorf("%d stage-2 uploads after repeats, want 3", n)
	}

	in.stop()
	assertNoSecrets(t, in.data, tok.Access, tok.Refresh, tok.Dataset)
	if strings.Contains(in.logs.String(), tok.Access) {
		t.Error("the access token reached the log")
	}
}

// assertNoSecrets fails if any file under dir holds one of secrets.
func assertNoSecrets(t *testing.T, dir string, secrets ...string) {
	t.Helper()
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds a secret", path)
			}
		}
		return nil
	})
}

func TestEndToEndCurl(t *testing.T) {
	curl := requireTool(t, "curl")
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	tok := api.NewSession()
	in := startInstance(t, game, api, "")
	caFile := filepath.Join(t.TempDir(), "fusou-ca.pem")
	in.cli("", "ca", "export", "--out", caFile)
	in.cli(sessionJSON(tok), "session", "set")

	p := "/kcs2/img/title/02.png"
	out := filepath.Join(t.TempDir(), "out.png")
	cmd := exec.Command(curl, "-sS", "--fail", "--proxy", "http://"+in.proxyAddr, "--cacert", caFile,
		"-o", out, "https://"+gameHost+p+"?version=5")
	cmd.Env = append(os.Environ(), "NO_PROXY=", "no_proxy=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("curl: %v\n%s", err, b)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, game.assets[p]) {
		t.Fatalf("curl got %d bytes, want %d identical", len(got), len(game.assets[p]))
	}
	waitFor(t, "the upload", func() bool { return api.UploadCount("assets"+p, sha(game.assets[p])) == 1 })

	// Without --cacert, curl refuses the proxy's certificate: nothing is trusted by accident.
	cmd = exec.Command(curl, "-sS", "--fail", "--proxy", "http://"+in.proxyAddr, "-o", os.DevNull, "https://"+gameHost+p)
	if err := cmd.Run(); err == nil {
		t.Error("curl accepted the proxy's certificate without the exported CA")
	}
}

// TestEndToEndChromium loads a page from the game server in headless Chromium through the
// proxy, with the exported CA trusted through an NSS database, and checks that its images
// reach the API.
func TestEndToEndChromium(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only: Chromium elsewhere trusts the OS's store, not the NSS database this test fills")
	}
	chromium := requireTool(t, "chromium")
	certutil := requireTool(t, "certutil")
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	tok := api.NewSession()
	in := startInstance(t, game, api, "")
	in.cli(sessionJSON(tok), "session", "set")

	// Chromium on Linux trusts what $HOME/.pki/nssdb trusts.
	home := t.TempDir()
	nss := filepath.Join(home, ".pki", "nssdb")
	caFile := filepath.Join(t.TempDir(), "fusou-ca.pem")
	in.cli("", "ca", "export", "--out", caFile)
	nsstest.NewDB(t, certutil, nss)
	if b, err := exec.Command(certutil, "-A", "-d", "sql:"+nss, "-n", "fusou-proxy", "-t", "C,,", "-i", caFile).CombinedOutput(); err != nil {
		t.Fatalf("certutil -A: %v\n%s", err, b)
	}
	renderGamePage(t, chromium, in.proxyAddr, home, append(os.Environ(), "HOME="+home))
	for p, want := range game.assets {
		if !strings.HasSuffix(p, ".png") {
			continue
		}
		waitFor(t, "the upload of "+p, func() bool { return api.UploadCount("assets"+p, sha(want)) == 1 })
	}
}

// renderGamePage has headless Chromium, with its profile in home and the environment env, load
// the game page through the proxy at proxyAddr, and fails t unless it renders.
func renderGamePage(t *testing.T, chromium, proxyAddr, home string, env []string) {
	t.Helper()
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(home, "profile"),
		"--proxy-server=http://"+proxyAddr,
		"--virtual-time-budget=10000",
		"--dump-dom", "https://"+gameHost+"/index.html")
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := runWithTimeout(cmd, 90*time.Second); err != nil {
		t.Fatalf("chromium: %v\nstderr:\n%s", err, tail(stderr.String(), 3000))
	}
	if !strings.Contains(stdout.String(), "<h1>game</h1>") {
		t.Fatalf("chromium did not render the game page:\n%s\nstderr:\n%s", tail(stdout.String(), 2000), tail(stderr.String(), 3000))
	}
}

// requireTool finds a client program; without it the test is skipped on a developer's machine
// but fails in CI on Linux, where .ci/run installs it.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" && runtime.GOOS == "linux" {
		t.Fatalf("%s is not installed, though .ci/run installs it", name)
	}
	if underWine {
		t.Skipf("%s is not installed: a wine prefix has no %s.exe", name, name)
	}
	t.Skipf("%s is not installed (.ci/run installs it)", name)
	return ""
}

func runWithTimeout(cmd *exec.Cmd, d time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("still running after %s", d)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func TestCLIWithoutARunningInstance(t *testing.T) {
	data := t.TempDir()
	for _, args := range [][]string{{"status"}, {"retry"}, {"session", "clear"}} {
		cmd := command(t, t.TempDir(), []string{"FUSOU_CONTROL_LISTEN=" + freePort(t)}, append(args, "--data-dir", data)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		_ = cmd.Run()
		msg := strings.TrimSpace(stderr.String())
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(msg, "no fusou-proxy is running") || strings.Contains(msg, "\n") {
			t.Errorf("%v: exit %d, stderr %q; want 1 and one clear line", args, code, msg)
		}
	}
}

// A live edit of max_attempts applies to the next pass; a broken edit changes nothing.
func TestLiveConfigEdit(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	tok := api.NewSession()
	api.SetFaultFunc(assettest.Handshake, func(*http.Request, int) *assettest.Fault { return &assettest.Fault{Status: 503} })
	in := startInstance(t, game, api, "")
	in.cli(sessionJSON(tok), "session", "set")
	resp, err := in.client().Get("https://" + gameHost + "/kcs2/img/title/01.png")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waitFor(t, "the failed live upload", func() bool { return strings.Contains(in.logs.String(), "Saved pending upload due to") })

	orig, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	// The instance watches its file; the CLI keeps reading an unedited copy.
	watched := in.config
	in.config = filepath.Join(t.TempDir(), "cli.toml")
	if err := os.WriteFile(in.config, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	edit := func(s string) {
		t.Helper()
		if err := os.WriteFile(watched, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Broken: max_attempts = 1 beside an invalid value. Refused whole; 5 stays in force.
	edit(strings.Replace(string(orig), "interval_seconds = 3600", "interval_seconds = 3600\nmax_attempts = 1\nconcurrency = 0", 1))
	waitFor(t, "the refusal", func() bool { return strings.Contains(in.logs.String(), "Config reload refused") })
	if !strings.Contains(in.logs.String(), `"key":"app.asset_sync.retry.concurrency"`) {
		t.Errorf("the refusal does not name the key:\n%s", in.logs)
	}
	if out, code := in.cliCode("", "retry", "--wait"); !strings.Contains(out, "discarded 0, remaining 1") || code != 1 {
		t.Fatalf("after a refused edit: %q, exit %d; want the entry kept (max_attempts still 5), exit 1", out, code)
	}
	// Fixed: max_attempts = 1 applies to the next pass.
	edit(strings.Replace(string(orig), "interval_seconds = 3600", "interval_seconds = 3600\nmax_attempts = 1", 1))
	waitFor(t, "the reload", func() bool { return strings.Contains(in.logs.String(), "Config reloaded") })
	if out := in.cli("", "retry", "--wait"); !strings.Contains(out, "discarded 1, remaining 0") {
		t.Fatalf("after max_attempts = 1: %q; want the entry discarded", out)
	}
	if !strings.Contains(in.logs.String(), `"reason":"max_attempts"`) {
		t.Error("no Discarded pending upload line with reason max_attempts")
	}
	// A key that needs a restart says so.
	edit(strings.Replace(string(orig), "interval_seconds = 3600", "interval_seconds = 3600\nmax_attempts = 1", 1) +
		"\n[app]\ndata_dir = \"/elsewhere\"\n")
	waitFor(t, "the restart notice", func() bool {
		return strings.Contains(in.logs.String(), "Config change needs a restart to take effect") &&
			strings.Contains(in.logs.String(), "app.data_dir")
	})
}

func TestPendingCommands(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	in := startInstance(t, game, api, "") // no session: captures stay pending
	c := in.client()
	for _, p := range []string{"/kcs2/img/title/01.png", "/kcs2/img/title/02.png"} {
		resp, err := c.Get("https://" + gameHost + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	waitFor(t, "2 pending entries", func() bool { return in.status().Pending.Count == 2 })

	list := in.cli("", "pending", "list") // read-only, beside the running proxy
	if !strings.Contains(list, "2 entries") {
		t.Fatalf("pending list:\n%s", list)
	}
	id := strings.Fields(strings.Split(list, "\n")[1])[0]
	var shown map[string]any
	if err := json.Unmarshal([]byte(in.cli("", "pending", "show", id)), &shown); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "target_url", "headers", "created_at", "attempt_count", "last_attempt_at", "last_error", "file_path", "context"} {
		if _, ok := shown[k]; !ok {
			t.Errorf("pending show lacks %q: %v", k, shown)
		}
	}

	purge := in.command("pending", "purge", "--all")
	var stderr bytes.Buffer
	purge.Stderr = &stderr
	if err := purge.Run(); err == nil || !strings.Contains(stderr.String(), "stop the running fusou-proxy first") {
		t.Errorf("purge beside a running proxy: %v, %q; want a refusal naming the cause", err, stderr.String())
	}
	bad := in.command("pending", "purge")
	bad.Run()
	if code := bad.ProcessState.ExitCode(); code != 2 {
		t.Errorf("purge without --expired/--all: exit %d, want 2", code)
	}

	in.stop()
	if out := in.cli("", "pending", "purge", "--all"); !strings.Contains(out, "purged 2") {
		t.Errorf("purge --all printed %q", out)
	}
	if list := in.cli("", "pending", "list"); !strings.Contains(list, "0 entries") {
		t.Errorf("after purge:\n%s", list)
	}
}
