package faulttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fusou-proxy/fusou-proxy/assets"
	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/pending"
	"github.com/fusou-proxy/fusou-proxy/retry"
)

// Uploader tunables: quick in-call retries, and a no-progress timeout short enough that a
// stalled connection fails within seconds rather than the production minute.
const (
	retryWaitMin   = 5 * time.Millisecond
	retryWaitMax   = 50 * time.Millisecond
	requestTimeout = 2 * time.Second
	connectTimeout = 2 * time.Second
	// slowLinkTimeout is the no-progress timeout over a slow link. Linux lets a send buffer
	// grow to 4 MiB (net.ipv4.tcp_wmem), which may still be draining after the last body byte
	// is written; at 256 KB/s that is 16 s, which the uploader would mistake for a stall
	// with requestTimeout (TestSlowMovingLinkIsNotCutOff).
	slowLinkTimeout = 30 * time.Second
)

// largeBytes is the size from which an asset counts as large: such uploads are the ones a
// scenario waits for to be in flight.
const largeBytes = 1 << 20

// rig is the upload path of cmd/fusou-proxy with Toxiproxy between the uploader and the API fake:
//
//	Pipeline / retry.Service ─► Uploader ─► toxiproxy (127.0.0.1) ─► assettest.Server (127.0.0.1)
//
// The API fake, the proxy and the data directory live as long as the test; the app (store,
// session, uploader, pipeline, retry service) can be stopped and started again on the same
// directory, as a restart of the binary would.
type rig struct {
	t        *testing.T
	api      *assettest.Server
	tp       *toxiproxy.Proxy
	dir      string // the data directory: pending_uploads/
	endpoint string // the uploader's endpoint: the proxy's address
	logs     *observer.ObservedLogs
	log      *zap.Logger

	// The app, nil while stopped.
	store   *pending.Store
	session *assets.SessionHolder
	pipe    *assets.Pipeline
	retry   *retry.Service
	prev    assets.Stats // the pipeline counters of earlier app generations

	// largeUploads counts stage-2 requests of large assets that reached the fake.
	largeUploads atomic.Int64
	passes       int           // retry passes drain triggered
	down         bool          // the proxy is stopped (apiDown)
	timeout      time.Duration // the uploader's RequestTimeout
}

// newRig starts the API fake, the proxy and the app. timeout is the uploader's no-progress
// timeout; 0 means requestTimeout.
func newRig(t *testing.T, timeout time.Duration) *rig {
	t.Helper()
	if timeout == 0 {
		timeout = requestTimeout
	}
	r := &rig{t: t, dir: t.TempDir(), timeout: timeout}

	r.api = assettest.NewServer()
	t.Cleanup(r.api.Close)
	// The real server answers an absolute uploadUrl on its own origin; here that would be the
	// fake's address, which the uploader refuses (another origin than its endpoint) and which
	// would bypass the toxics. A relative one sends stage 2 through the proxy too.
	r.api.SetRelativeUploadURL(true)
	r.api.SetFaultFunc(assettest.Upload, func(req *http.Request, _ int) *assettest.Fault {
		if req.ContentLength >= largeBytes {
			r.largeUploads.Add(1) // atomic: the fake holds its lock here
		}
		return nil
	})

	r.tp = startToxiproxy(t, strings.TrimPrefix(r.api.URL, "http://"))
	r.endpoint = "http://" + r.tp.Listen + assettest.UploadPath

	// Debug level keeps go-retryablehttp's line for each failed try, which some checks count.
	core, logs := observer.New(zapcore.DebugLevel)
	r.logs, r.log = logs, zap.New(core)
	r.start()
	t.Cleanup(func() {
		if r.pipe != nil {
			r.stop()
		}
	})
	return r
}

// start opens the store and starts the app on it, wired as cmd/fusou-proxy wires it.
func (r *rig) start() {
	t := r.t
	t.Helper()
	var err error
	r.store, err = pending.Open(pending.Options{Dir: filepath.Join(r.dir, "pending_uploads"), Logger: r.log})
	if err != nil {
		t.Fatal(err)
	}
	r.session = &assets.SessionHolder{}
	tok := r.api.NewSession()
	r.session.Set(assets.Session{AccessToken: tok.Access, RefreshToken: tok.Refresh, DatasetToken: tok.Dataset})
	up, err := assets.NewUploader(assets.UploaderOptions{
		Endpoint: r.endpoint, Session: r.session,
		ConnectTimeout: connectTimeout, RequestTimeout: r.timeout,
		RetryWaitMin: retryWaitMin, RetryWaitMax: retryWaitMax,
		Logger: r.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.pipe, err = assets.NewPipeline(assets.PipelineOptions{
		Store: r.store, Uploader: up, Session: r.session,
		Endpoint: r.endpoint, Workers: 2, QueueSize: 256, MaxAssetBytes: 200 << 20,
		Settings: assets.Settings{Enable: true, Extensions: []string{"png", "jpg", "jpeg", "gif", "webp", "bmp", "json"}},
		Logger:   r.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.pipe.Run(context.Background())

	r.retry = retry.New(retry.Options{
		Store: r.store,
		Deliver: func(ctx context.Context, e pending.Entry, count bool) (retry.Outcome, string) {
			d := r.pipe.Deliver(ctx, e, count)
			return d.Outcome(), d.Reason
		},
		HasSession: func() bool { _, ok := r.session.Get(); return ok },
		// The timer stays out of the way: the test triggers every pass itself.
		Settings: retry.Settings{Interval: time.Hour, Concurrency: 2},
		Logger:   r.log,
	})
	r.retry.Start(context.Background())
}

// stop shuts the app down as the binary does: the retry service, then the pipeline (which
// cancels the uploads in flight), then the store. It reports each error.
func (r *rig) stop() {
	r.t.Helper()
	r.retry.Stop()
	if err := r.pipe.Close(); err != nil {
		r.t.Errorf("close pipeline: %v", err)
	}
	r.prev = addStats(r.prev, r.pipe.Stats())
	if err := r.store.Close(); err != nil {
		r.t.Errorf("close store: %v", err)
	}
	r.store, r.session, r.pipe, r.retry = nil, nil, nil, nil
}

// stats are the pipeline counters over every app generation.
func (r *rig) stats() assets.Stats {
	if r.pipe == nil {
		return r.prev
	}
	return addStats(r.prev, r.pipe.Stats())
}

func addStats(a, b assets.Stats) assets.Stats {
	return assets.Stats{Captured: a.Captured + b.Captured, Shed: a.Shed + b.Shed, Skipped: a.Skipped + b.Skipped,
		Known: a.Known + b.Known, Committed: a.Committed + b.Committed, Uploaded: a.Uploaded + b.Uploaded,
		Failed: a.Failed + b.Failed, Rejected: a.Rejected + b.Rejected, Auth: a.Auth + b.Auth}
}

// startToxiproxy runs a Toxiproxy proxy in this process, listening on a free loopback port
// and forwarding to upstream. Toxiproxy v2.5.0 has no in-process API beyond its own types:
// an ApiServer (needed for its metrics and logger, never listening here), NewProxy, Start.
func startToxiproxy(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	// Its toxics log through zerolog's global logger, at trace level, to stderr.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "fusou-asset-sync", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop) // a no-op when stopped already
	return p
}

// toxic is a Toxiproxy toxic as its JSON API describes one.
type toxic struct {
	Name     string         `json:"name"`
	Type     string         `json:"type"`
	Stream   string         `json:"stream"` // "upstream" (requests) or "downstream" (answers)
	Toxicity float32        `json:"toxicity"`
	Attrs    map[string]any `json:"attributes"`
}

// addToxics puts toxics on the proxy; they apply to open connections as well as new ones.
func (r *rig) addToxics(toxics []toxic) {
	r.t.Helper()
	for _, tx := range toxics {
		if tx.Toxicity == 0 {
			tx.Toxicity = 1
		}
		b, err := json.Marshal(tx)
		if err != nil {
			r.t.Fatal(err)
		}
		if _, err := r.tp.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
			r.t.Fatalf("add toxic %s: %v", tx.Name, err)
		}
	}
}

// removeToxic takes one toxic off the proxy.
func (r *rig) removeToxic(name string) {
	r.t.Helper()
	if err := r.tp.Toxics.RemoveToxic(context.Background(), name); err != nil {
		r.t.Fatalf("remove toxic %s: %v", name, err)
	}
}

// removeToxics takes every toxic off the proxy.
func (r *rig) removeToxics() {
	r.t.Helper()
	r.tp.Toxics.ResetToxics(context.Background())
	if n := len(r.tp.Toxics.GetToxicArray()); n != 0 {
		r.t.Fatalf("%d toxics left after ResetToxics", n)
	}
}

// apiDown makes the API go away: Toxiproxy closes its listener and every open connection.
func (r *rig) apiDown() {
	r.tp.Stop()
	r.down = true
}

// apiUp brings the API back on the same address.
func (r *rig) apiUp() {
	r.t.Helper()
	if !r.down {
		return
	}
	// Another process could take the freed port meanwhile; try for a while before giving up.
	var err error
	waitFor(r.t, 10*time.Second, "toxiproxy listening again", func() bool {
		err = r.tp.Start()
		return err == nil || errors.Is(err, toxiproxy.ErrProxyAlreadyStarted)
	})
	r.down = false
}

// asset is one generated game asset: what the server must end up holding.
type asset struct {
	path string // the URL path the "game" served it at
	key  string
	hash string
	size int64
}

// load is the batch of captures a scenario feeds.
type load struct {
	small, large int
	// smallMin..smallMax and largeMin..largeMax bound the sizes, in bytes.
	smallMin, smallMax, largeMin, largeMax int
}

// makeAssets decides the batch: distinct paths, sizes drawn from seed, large ones spread
// through the order (first, then evenly) so that some are in flight while the fault is on.
func makeAssets(seed uint64, l load) []asset {
	rng := rand.New(rand.NewPCG(seed, 7))
	n := l.small + l.large
	out := make([]asset, 0, n)
	largeAt := map[int]bool{}
	for i := range l.large {
		largeAt[i*n/max(l.large, 1)] = true
	}
	for i := range n {
		size := l.smallMin + rng.IntN(l.smallMax-l.smallMin+1)
		if largeAt[i] {
			size = l.largeMin + rng.IntN(l.largeMax-l.largeMin+1)
		}
		p := fmt.Sprintf("/kcs2/resources/ship/full/%04d_%d.png", i, rng.IntN(10000))
		out = append(out, asset{path: p, key: "assets" + p, size: int64(size)})
	}
	return out
}

// body returns the bytes of asset i: random, from a seed of its own, so that they can be
// made again without being kept.
func body(seed uint64, i int, size int64) []byte {
	var key [32]byte
	copy(key[:], fmt.Sprintf("faulttest %d %d", seed, i))
	b := make([]byte, size)
	rand.NewChaCha8(key).Read(b)
	copy(b, "\x89PNG\r\n\x1a\n")
	return b
}

// capture feeds every asset through the pipeline as the proxy does (Start, the body in
// chunks, Finish) and fills in their hashes.
func (r *rig) capture(seed uint64, batch []asset) {
	r.t.Helper()
	for i := range batch {
		a := &batch[i]
		b := body(seed, i, a.size)
		sum := sha256.Sum256(b)
		a.hash = hex.EncodeToString(sum[:])
		req := &http.Request{Method: http.MethodGet,
			URL: &url.URL{Scheme: "https", Host: "w01y.kancolle-server.com", Path: a.path}}
		resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"image/png"}},
			ContentLength: a.size}
		sp := r.pipe.Start(req, resp)
		if sp == nil {
			r.t.Fatalf("pipeline declined capture %s", a.path)
		}
		for len(b) > 0 {
			n := min(len(b), 32<<10) // the proxy's tee sees the body in read-sized pieces
			if _, err := sp.Write(b[:n]); err != nil {
				r.t.Fatalf("spool %s: %v", a.path, err)
			}
			b = b[n:]
		}
		sp.Finish(true)
	}
}

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// drain runs forced retry passes until every capture is committed and the store is empty, or
// fails the test at the deadline, naming what is left and why.
func (r *rig) drain(n int, timeout time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		st := r.stats()
		if st.Shed > 0 {
			r.t.Fatalf("%d captures were shed: %+v", st.Shed, st)
		}
		if st.Committed == int64(n) && r.store.Stats().Count == 0 {
			return
		}
		_, seq := r.retry.Trigger("faulttest", true)
		r.passes++
		if _, err := r.retry.Wait(ctx, seq); err != nil {
			var left []string
			for _, e := range r.store.List() {
				left = append(left, fmt.Sprintf("%s (attempts %d, last error %q)", e.Context.Key, e.AttemptCount, e.LastError))
			}
			r.t.Fatalf("store not empty after %s of retry passes (%v): stats %+v, committed %d of %d, pending: %s",
				timeout, err, r.stats(), st.Committed, n, strings.Join(left, "; "))
		}
		// A pass that found every entry held by a live upload ends at once: pace the next.
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// verify checks that every asset reached the server exactly once and nothing else is left:
// no pending, rejected or corrupt entry, no shed capture, no discard, no spool file, and a store
// that reopens clean.
func (r *rig) verify(batch []asset) {
	t := r.t
	t.Helper()
	twice := false
	for _, a := range batch {
		if n := r.api.UploadCount(a.key, a.hash); n != 1 {
			t.Errorf("%s uploaded %d times, want exactly 1", a.key, n)
			twice = twice || n > 1
		}
		if o, ok := r.api.Object(a.key); !ok || o.ContentHash != a.hash || o.Size != a.size {
			t.Errorf("server holds %s as %+v (present %v), want hash %s size %d", a.key, o, ok, a.hash, a.size)
		}
	}
	if n := r.api.Uploads(); n != len(batch) {
		t.Errorf("server accepted %d uploads, want %d (one per distinct asset)", n, len(batch))
	}
	if twice {
		r.logFailures()
	}
	st := r.stats()
	if st.Captured != int64(len(batch)) || st.Committed != int64(len(batch)) || st.Shed != 0 || st.Rejected != 0 {
		t.Errorf("pipeline stats %+v, want %d captured and committed, none shed or rejected", st, len(batch))
	}
	if st.Uploaded != int64(len(batch)) {
		t.Errorf("pipeline counted %d successful uploads, want %d", st.Uploaded, len(batch))
	}
	if left := r.store.List(); len(left) != 0 {
		t.Errorf("%d entries still pending, first %s", len(left), left[0].Context.Key)
	}
	for _, msg := range []string{"Discarded pending upload", "Upload rejected by the server", "capture shed", "capture not committed"} {
		if n := r.logs.FilterMessageSnippet(msg).Len(); n != 0 {
			t.Errorf("%d log lines %q, want none", n, msg)
		}
	}

	// Shut down as the binary does, then look at the disk.
	storeDir := r.store.Dir()
	r.stop()
	for _, sub := range []string{"corrupt", "rejected"} {
		if names := dirNames(t, filepath.Join(storeDir, sub)); len(names) != 0 {
			t.Errorf("%s/ holds %v, want nothing", sub, names)
		}
	}
	names := slices.DeleteFunc(dirNames(t, storeDir), func(n string) bool {
		return n == ".lock" || n == "corrupt" || n == "rejected"
	})
	if len(names) != 0 {
		t.Errorf("pending_uploads/ holds %v, want only its lock file", names)
	}

	core, logs := observer.New(zapcore.DebugLevel)
	again, err := pending.Open(pending.Options{Dir: storeDir, Logger: zap.New(core)})
	if err != nil {
		t.Fatalf("reopen the pending store: %v", err)
	}
	defer again.Close()
	if n := again.Stats().Count; n != 0 {
		t.Errorf("reopened store holds %d entries, want 0", n)
	}
	if warn := logs.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zapcore.WarnLevel }); warn.Len() != 0 {
		t.Errorf("reopening the store logged %d warnings, first %q", warn.Len(), warn.All()[0].Message)
	}
}

// logFailures logs the uploader's failed tries and unsuccessful outcomes, to tell how an
// asset came to be stored twice.
func (r *rig) logFailures() {
	r.t.Helper()
	const most = 100
	n := 0
	for _, e := range r.logs.All() {
		m := e.ContextMap()
		if e.Message != "retryablehttp: request failed" &&
			(e.Message != "asset upload finished" || m["class"] == assets.Success.String()) {
			continue
		}
		if n++; n > most {
			r.t.Logf("... (more failures left out)")
			return
		}
		r.t.Logf("%s %s %v", e.Time.Format("15:04:05.000"), e.Message, m)
	}
}

// dirNames lists a folder; a missing folder is empty.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
