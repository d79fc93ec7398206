//go:build linux

package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets"
	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/certs"
	"github.com/fusou-proxy/fusou-proxy/pending"
)

var memTest = flag.Bool("memtest", false,
	"run TestMemoryStreaming2GB: 2 GB of assets through the proxy and the real capture pipeline in a subprocess (a minute or more)")

// The memory test's load: memTotalBytes of assets of 1 to 8 MB over memConns connections,
// memDistinct different ones, so that each is fetched about twice (distinct, then repeated).
const (
	memTotalBytes = 2 << 30
	memConns      = 16
	memDistinct   = 228
	memLimitBytes = 100 << 20 // the proxy process's peak RSS must stay below this
	memChildEnv   = "FUSOU_PROXY_MEMORY_CHILD"
)

// memAssetSize is asset id's size: 1 to 8 MiB, plus id bytes so no two sizes repeat a pattern.
func memAssetSize(id int) int64 { return int64(1+id%8)<<20 + int64(id) }

// memChild is what the parent tells its subprocess.
type memChild struct {
	Dir        string // the data folder: ca/, pending_uploads/, spool/
	Upstream   string // host:port of the game server; every MITM'd dial goes there
	UpstreamCA string // PEM file of the game server's CA
	UploadURL  string // the API fake's upload endpoint
	Access     string // a session the fake issued, for the child's uploads
	Refresh    string
	Dataset    string
}

// memReport is what the subprocess answers at the end.
type memReport struct {
	VmHWM, VmRSS     string // from /proc/self/status
	HeapSys, Sys     uint64 // runtime.MemStats at the end
	NumGC            uint32
	Pipeline         assets.Stats
	Proxy            Stats
	PendingLeft      int
	PendingLeftBytes int64
}

// TestMemoryStreaming2GB streams 2 GB of 1 to 8 MB assets, half of them repeats, through
// the proxy at 16 connections while the real pipeline captures, commits and uploads them,
// and checks the proxy's peak RSS (VmHWM, read by the proxy process itself) stays under
// 100 MB. The game server, the clients and the API fake run in this process; the proxy,
// its CA, the pipeline and the pending store in a subprocess, so that only their memory
// counts. Run it with
//
//	go test -run TestMemoryStreaming2GB -v ./proxy/ -args -memtest
func TestMemoryStreaming2GB(t *testing.T) {
	if !*memTest {
		t.Skip("needs -memtest")
	}
	if raceEnabled() {
		t.Skip("the race detector multiplies memory use; run without -race")
	}
	upCA := newTestCA(t, "game CA")
	game, _ := startTLSServer(t, upCA.leaf(t, "*.kancolle-server.com"), http.HandlerFunc(serveMemAsset))
	api := assettest.NewServer()
	t.Cleanup(api.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "game-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upCA.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := api.NewSession()
	cfg, _ := json.Marshal(memChild{Dir: dir, Upstream: game.Listener.Addr().String(), UpstreamCA: caFile, UploadURL: api.UploadEndpoint,
		Access: tok.Access, Refresh: tok.Refresh, Dataset: tok.Dataset})

	cmd := exec.Command(os.Args[0], "-test.run", "^TestMemoryChild$")
	cmd.Env = append(os.Environ(), memChildEnv+"="+string(cfg))
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	next := func(prefix string) string {
		for lines.Scan() {
			if rest, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return rest
			}
		}
		t.Fatalf("the proxy process ended before printing %q", prefix)
		return ""
	}
	proxyAddr := next("listening ")

	caPEM, err := os.ReadFile(filepath.Join(dir, "ca", certs.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{
		Proxy:               http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr}),
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		DisableCompression:  true,
		MaxConnsPerHost:     memConns,
		MaxIdleConnsPerHost: memConns,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	start := time.Now()
	var sent, requests atomic.Int64
	var wg sync.WaitGroup
	for range memConns {
		wg.Go(func() {
			for sent.Load() < memTotalBytes {
				id := int(requests.Add(1)-1) % memDistinct
				resp, err := client.Get(fmt.Sprintf("https://%s/kcs2/img/mem/%d.png", gameHost, id))
				if err != nil {
					t.Error(err)
					return
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != memAssetSize(id) {
					t.Errorf("asset %d: %d bytes, %v; want %d bytes", id, n, err, memAssetSize(id))
					return
				}
				sent.Add(n)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	if _, err := io.WriteString(stdin, "report\n"); err != nil {
		t.Fatal(err)
	}
	var r memReport
	if err := json.Unmarshal([]byte(next("report ")), &r); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests, %d MB in %v (%.0f MB/s) at %d connections",
		requests.Load(), sent.Load()>>20, elapsed.Round(time.Millisecond), float64(sent.Load())/(1<<20)/elapsed.Seconds(), memConns)
	t.Logf("proxy process: VmHWM %s, VmRSS %s at the end; Go heap from the OS %d MB, total from the OS %d MB, %d GCs",
		r.VmHWM, r.VmRSS, r.HeapSys>>20, r.Sys>>20, r.NumGC)
	t.Logf("pipeline: %+v; %d entries (%d MB) still pending at shutdown", r.Pipeline, r.PendingLeft, r.PendingLeftBytes>>20)
	hwm, err := parseKB(r.VmHWM)
	if err != nil {
		t.Fatal(err)
	}
	if hwm >= memLimitBytes {
		t.Errorf("peak RSS of the proxy process %s, want under %d MB", r.VmHWM, memLimitBytes>>20)
	}
	if r.Pipeline.Captured == 0 || r.Pipeline.Committed == 0 || r.Pipeline.Known == 0 {
		t.Errorf("the pipeline did not capture, commit and recognise assets: %+v", r.Pipeline)
	}
}

// serveMemAsset serves /kcs2/img/mem/<id>.png: memAssetSize(id) incompressible bytes,
// generated as they are sent, so that the server holds none of them.
func serveMemAsset(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/kcs2/img/mem/"), ".png"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	size := memAssetSize(id)
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	src := rand.NewChaCha8([32]byte{byte(id), byte(id >> 8), 'm'})
	_, _ = io.CopyN(w, src, size)
}

// TestMemoryChild is TestMemoryStreaming2GB's subprocess: the proxy with its CA and the real
// pipeline, as cmd/fusou-proxy wires them. It prints "listening <addr>", serves until a line
// arrives on stdin, closes the pipeline (committing what is queued) and prints
// "report <json>".
func TestMemoryChild(t *testing.T) {
	cfgJSON := os.Getenv(memChildEnv)
	if cfgJSON == "" {
		t.Skip("only run as TestMemoryStreaming2GB's subprocess")
	}
	var cfg memChild
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.Open(certs.Options{Dir: filepath.Join(cfg.Dir, "ca"), Hosts: []string{"kancolle-server.com"}})
	if err != nil {
		t.Fatal(err)
	}
	upPEM, err := os.ReadFile(cfg.UpstreamCA)
	if err != nil {
		t.Fatal(err)
	}
	upRoots := x509.NewCertPool()
	upRoots.AppendCertsFromPEM(upPEM)
	st, err := pending.Open(pending.Options{Dir: filepath.Join(cfg.Dir, "pending_uploads")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sess := &assets.SessionHolder{}
	sess.Set(assets.Session{AccessToken: cfg.Access, RefreshToken: cfg.Refresh, DatasetToken: cfg.Dataset})
	up, err := assets.NewUploader(assets.UploaderOptions{Endpoint: cfg.UploadURL, Session: sess})
	if err != nil {
		t.Fatal(err)
	}
	pl, err := assets.NewPipeline(assets.PipelineOptions{Store: st, Uploader: up, Session: sess,
		Endpoint: cfg.UploadURL, Workers: 2, QueueSize: 256, MaxAssetBytes: 200 << 20, Settings: assets.Settings{Enable: true, Extensions: []string{"png"}}})
	if err != nil {
		t.Fatal(err)
	}
	pl.Run(context.Background())
	upHost, upPort, _ := net.SplitHostPort(cfg.Upstream)
	p, err := New(Options{
		MITMHosts:     []string{"kancolle-server.com"},
		DialRules:     []DialRule{{Port: "443", ToHost: upHost, ToPort: upPort}},
		UpstreamRoots: upRoots,
		Certs:         ca,
		Sink:          pipelineSink{pl},
		Capture:       CaptureRules{Enable: true, PathPrefixes: []string{"/kcs2/"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	fmt.Printf("listening %s\n", ln.Addr())

	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	srv.Close()
	if err := pl.Close(); err != nil {
		t.Error(err)
	}
	r := memReport{Pipeline: pl.Stats(), Proxy: p.Stats()}
	r.VmHWM, r.VmRSS = procStatus("VmHWM"), procStatus("VmRSS")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.HeapSys, r.Sys, r.NumGC = ms.HeapSys, ms.Sys, ms.NumGC
	ps := st.Stats()
	r.PendingLeft, r.PendingLeftBytes = ps.Count, ps.Bytes
	out, _ := json.Marshal(r)
	fmt.Printf("report %s\n", out)
}

// procStatus is a field of /proc/self/status, e.g. "41236 kB" for VmHWM.
func procStatus(field string) string {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// parseKB turns "41236 kB" into bytes.
func parseKB(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSuffix(s, " kB"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %q: %w", s, err)
	}
	return n << 10, nil
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}
