//go:build unix

package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/elazarl/goproxy"
	"go.uber.org/zap"
)

// Benchmarks for docs/bench/proxy.md and docs/BENCHMARKS.md. Run side by side in
// one process:
//
//	go test -run '^$' -bench . -count 6 ./proxy/

const (
	benchAssetSize = 50 << 10
	benchConns     = 16 // concurrent client connections (or HTTP/2 streams)
	benchAssets    = 64 // distinct asset bodies
)

// benchEnv is one upstream game server and the CAs shared by every proxy under test.
type benchEnv struct {
	upCA, mitmCA *testCA
	game         *httptest.Server
	rules        []DialRule
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	bodies := make([][]byte, benchAssets)
	for i := range bodies {
		bodies[i] = assetBytes(uint64(100+i), benchAssetSize)
	}
	e := &benchEnv{upCA: newTestCA(b, "game CA"), mitmCA: newTestCA(b, "mitm CA")}
	e.game, _ = startTLSServer(b, e.upCA.leaf(b, "*.kancolle-server.com"), http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/kcs2/img/"), ".png")
			n, _ := strconv.Atoi(name)
			w.Header().Set("Content-Type", "image/png")
			w.Header().Set("Content-Length", strconv.Itoa(benchAssetSize))
			_, _ = w.Write(bodies[n%benchAssets])
		}))
	e.rules = []DialRule{ruleTo(b, "", "443", e.game)}
	return e
}

// plainGoproxy is the baseline: goproxy MITM with the same leaves, the same verifying
// upstream Transport, and no capture.
func (e *benchEnv) plainGoproxy() http.Handler {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = log.New(io.Discard, "", 0)
	gp.ConnectDial = nil
	p := &Proxy{log: zap.NewNop(), dialRules: e.rules}
	gp.Tr = newTransport(e.upCA.pool, p.dialContext)
	action := &goproxy.ConnectAction{Action: goproxy.ConnectMitm,
		TLSConfig: func(host string, _ *goproxy.ProxyCtx) (*tls.Config, error) {
			leaf, err := e.mitmCA.LeafFor(normalizeHost(host))
			if err != nil {
				return nil, err
			}
			return &tls.Config{Certificates: []tls.Certificate{*leaf}}, nil
		}}
	gp.OnRequest().HandleConnect(goproxy.FuncHttpsHandler(
		func(host string, _ *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) { return action, host }))
	return gp
}

// fusou is this package's Proxy capturing every asset to sink.
func (e *benchEnv) fusou(b *testing.B, sink Sink) *Proxy {
	b.Helper()
	rules := testRules()
	rules.MaxAssetBytes = 0
	p, err := New(Options{
		MITMHosts:     []string{"kancolle-server.com"},
		DialRules:     e.rules,
		UpstreamRoots: e.upCA.pool,
		Certs:         e.mitmCA,
		Sink:          sink,
		Capture:       rules,
	})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// run drives front with benchConns concurrent keep-alive connections (or HTTP/2 streams
// when h2) and reports requests per second, latency percentiles and process CPU per
// request. distinct requests a different asset each time.
func (e *benchEnv) run(b *testing.B, front http.Handler, distinct, h2 bool) {
	e.runThen(b, front, distinct, h2, nil)
}

// runThen is run, with settle called after the timed loop and before the CPU time is read,
// so that work a proxy deferred past the last response (a capture's commit) is counted.
func (e *benchEnv) runThen(b *testing.B, front http.Handler, distinct, h2 bool, settle func()) {
	srv := httptest.NewServer(front)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	tr := &http.Transport{
		Proxy:               http.ProxyURL(u),
		TLSClientConfig:     &tls.Config{RootCAs: e.mitmCA.pool},
		DisableCompression:  true,
		ForceAttemptHTTP2:   h2,
		MaxConnsPerHost:     benchConns,
		MaxIdleConnsPerHost: benchConns,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var seq atomic.Int64
	get := func() error {
		n := int64(0)
		if distinct {
			n = seq.Add(1)
		}
		resp, err := client.Get(fmt.Sprintf("https://%s/kcs2/img/%d.png", gameHost, n))
		if err != nil {
			return err
		}
		nb, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || nb != benchAssetSize) {
			err = fmt.Errorf("status %d, %d bytes", resp.StatusCode, nb)
		}
		return err
	}
	// Open the connections (TLS handshakes, leaf lookups) before timing.
	var warm sync.WaitGroup
	for range benchConns {
		warm.Go(func() {
			if err := get(); err != nil {
				b.Error(err)
			}
		})
	}
	warm.Wait()

	b.SetParallelism((benchConns + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.SetBytes(benchAssetSize)
	var (
		latMu sync.Mutex
		lat   []time.Duration // guarded by latMu
	)
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		defer func() { latMu.Lock(); lat = append(lat, mine...); latMu.Unlock() }()
		for pb.Next() {
			t0 := time.Now()
			if err := get(); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
	})
	b.StopTimer()
	window := cpuTime() - cpu0
	if settle != nil {
		settle()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
	}
	// Process CPU per request (client, proxy and server together) is far steadier than
	// wall time on a shared machine; the difference between two proxies is their cost.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
	// The same while the clients ran, without what settle does after them (for the pipeline:
	// the commits and uploads it deferred): what the clients competed with.
	b.ReportMetric(float64(window.Microseconds())/float64(b.N), "window-cpu-us/op")
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkOverhead compares plain goproxy MITM with this Proxy capturing every asset to
// temp files, 50 KB assets over 16 keep-alive connections, the same asset and distinct ones.
// "fusou-pipeline" captures into the real asset pipeline (spool, hash, fsync'd commit to a
// pending store, upload to the API fake; see pipeline_bench_test.go). "fusou-discard"
// captures to a Spool that drops the bytes (the proxy's own cost); "fusou" writes each
// capture into a reused temp file (plus the file writes); "fusou-newfile" also creates and
// removes a file per capture on the client's path.
func BenchmarkOverhead(b *testing.B) {
	e := newBenchEnv(b)
	for _, assets := range []string{"same", "distinct"} {
		distinct := assets == "distinct"
		b.Run(assets+"/goproxy", func(b *testing.B) {
			e.run(b, e.plainGoproxy(), distinct, false)
		})
		b.Run(assets+"/fusou-pipeline", func(b *testing.B) {
			e.runPipeline(b, distinct)
		})
		for _, v := range []struct {
			name string
			sink func(dir string) Sink
		}{
			{"fusou-discard", func(string) Sink { return discardSink{} }},
			{"fusou", func(dir string) Sink { return &pooledFileSink{dir: dir} }},
			{"fusou-newfile", func(dir string) Sink { return fileSink{dir: dir} }},
		} {
			b.Run(assets+"/"+v.name, func(b *testing.B) {
				p := e.fusou(b, v.sink(b.TempDir()))
				defer p.CloseIdleConnections()
				e.run(b, p, distinct, false)
				if st := p.Stats(); st.CapturesCompleted == 0 || st.CapturesAborted != 0 {
					b.Errorf("captures: %+v", st)
				}
			})
		}
	}
}

// BenchmarkClientHTTP2 measures goproxy's AllowHTTP2 off (16 HTTP/1.1 connections) against
// on (16 concurrent streams, which Go's client multiplexes on one HTTP/2 connection).
func BenchmarkClientHTTP2(b *testing.B) {
	e := newBenchEnv(b)
	for _, h2 := range []bool{false, true} {
		name := "h1-16conns"
		if h2 {
			name = "h2-16streams"
		}
		b.Run(name, func(b *testing.B) {
			p := e.fusou(b, &pooledFileSink{dir: b.TempDir()})
			defer p.CloseIdleConnections()
			p.gp.AllowHTTP2 = h2
			e.run(b, p, true, h2)
		})
	}
}

// fileSink spools each capture to its own temp file, removed at Finish: the disk work a
// real Sink does on the client's path.
type fileSink struct{ dir string }

func (s fileSink) Start(*http.Request, *http.Response) Spool {
	f, err := os.CreateTemp(s.dir, "spool-*")
	if err != nil {
		return nil
	}
	return fileSpool{f}
}

type fileSpool struct{ f *os.File }

func (s fileSpool) Write(p []byte) (int, error) { return s.f.Write(p) }

func (s fileSpool) Finish(bool) {
	_ = s.f.Close()
	_ = os.Remove(s.f.Name())
}

// pooledFileSink writes each capture into a temp file taken from a free list and truncated,
// so that only the writes are measured, not file creation.
type pooledFileSink struct {
	dir  string
	mu   sync.Mutex
	free []*os.File // guarded by mu
}

func (s *pooledFileSink) Start(*http.Request, *http.Response) Spool {
	s.mu.Lock()
	var f *os.File
	if n := len(s.free); n > 0 {
		f, s.free = s.free[n-1], s.free[:n-1]
	}
	s.mu.Unlock()
	if f == nil {
		var err error
		if f, err = os.CreateTemp(s.dir, "spool-*"); err != nil {
			return nil
		}
	}
	return &pooledSpool{sink: s, f: f}
}

type pooledSpool struct {
	sink *pooledFileSink
	f    *os.File
	off  int64
}

func (s *pooledSpool) Write(p []byte) (int, error) {
	n, err := s.f.WriteAt(p, s.off)
	s.off += int64(n)
	return n, err
}

func (s *pooledSpool) Finish(bool) {
	_ = s.f.Truncate(s.off)
	s.sink.mu.Lock()
	s.sink.free = append(s.sink.free, s.f)
	s.sink.mu.Unlock()
}

// discardSink captures everything and keeps nothing.
type discardSink struct{}

func (discardSink) Start(*http.Request, *http.Response) Spool { return discardSpool{} }

type discardSpool struct{}

func (discardSpool) Write(p []byte) (int, error) { return len(p), nil }
func (discardSpool) Finish(bool)                 {}
