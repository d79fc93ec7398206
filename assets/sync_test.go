package assets

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/pending"
)

// fixture is a pipeline wired to a real store and the FUSOU API fake.
type fixture struct {
	srv     *assettest.Server
	store   *pending.Store
	session *SessionHolder
	p       *Pipeline
	logs    *observer.ObservedLogs
	dir     string
}

type fixtureOpts struct {
	noSession bool
	workers   int
	index     bool
	noRun     bool
	// maxSpoolBytes is PipelineOptions.MaxSpoolBytes.
	maxSpoolBytes int64
}

func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	srv := assettest.NewServer()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	st, err := pending.Open(pending.Options{Dir: filepath.Join(dir, "pending_uploads"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sess := &SessionHolder{}
	if !o.noSession {
		sess.Set(testSession(srv))
	}
	up, err := NewUploader(UploaderOptions{Endpoint: srv.UploadEndpoint, Session: sess, RetryMax: 1,
		RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var ix *Index
	if o.index {
		if ix, err = OpenIndex(IndexOptions{Endpoint: srv.KeysEndpoint, Path: filepath.Join(dir, "asset_index.json"), Session: sess, Logger: log}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := NewPipeline(PipelineOptions{Store: st, Uploader: up, Index: ix, Session: sess,
		SpoolDir: filepath.Join(dir, "spool"), Endpoint: srv.UploadEndpoint, Workers: o.workers,
		MaxSpoolBytes: o.maxSpoolBytes,
		Settings:      Settings{Enable: true, Extensions: []string{"png", "jpg", "json"}}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if !o.noRun {
		p.Run(context.Background())
		t.Cleanup(func() { p.Close() })
	}
	return &fixture{srv: srv, store: st, session: sess, p: p, logs: logs, dir: dir}
}

// capture feeds one response through the pipeline as the proxy would; it reports whether
// the pipeline took it.
func (f *fixture) capture(urlPath string, body []byte, encoding string) bool {
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: "https", Host: "w01y.kancolle-server.com", Path: urlPath}}
	resp := &http.Response{StatusCode: 200, Header: http.Header{}}
	wire := body
	if encoding == "gzip" {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(body)
		zw.Close()
		wire = b.Bytes()
		resp.Header.Set("Content-Encoding", "gzip")
	}
	sp := f.p.Start(req, resp)
	if sp == nil {
		return false
	}
	for len(wire) > 0 { // in chunks, as a body streams
		n := min(len(wire), 4096)
		sp.Write(wire[:n])
		wire = wire[n:]
	}
	sp.Finish(true)
	return true
}

// eventually polls cond until it holds or a deadline passes. The deadline is generous: CI's
// two cores may be busy with other packages' tests.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func png(i int) []byte {
	return []byte(fmt.Sprintf("\x89PNG fake image number %d %s", i, bytes.Repeat([]byte{byte(i)}, 300)))
}

func TestCaptureIsCommittedThenUploaded(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	body := png(1)
	if !f.capture("/kcs2/img/title/01.png", body, "") {
		t.Fatal("capture declined")
	}
	eventually(t, "the upload", func() bool { return f.srv.UploadCount("assets/kcs2/img/title/01.png", sum(body)) == 1 })
	eventually(t, "the entry's deletion", func() bool { return f.store.Stats().Count == 0 })
	if s := f.p.Stats(); s.Captured != 1 || s.Committed != 1 || s.Uploaded != 1 {
		t.Errorf("stats = %+v", s)
	}
	if err := f.p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(mustGlob(t, filepath.Join(f.dir, "spool", "*"))); n != 0 {
		t.Errorf("%d files left in the spool folder after Close", n)
	}
}

func mustGlob(t testing.TB, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEncodedBodyIsUploadedDecoded(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	body := []byte(`{"api_result":1,"ships":[1,2,3]}`)
	f.capture("/kcs2/resources/world.json", body, "gzip")
	eventually(t, "the upload of the decoded bytes", func() bool {
		return f.srv.UploadCount("assets/kcs2/resources/world.json", sum(body)) == 1
	})
}

func TestSkippedExtensionIsNotCaptured(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	if f.capture("/kcs/sound/kc9999/1.mp3", []byte("ID3 sound"), "") {
		t.Error("an mp3 was captured though asset_extensions does not list it")
	}
	f.p.SetSettings(Settings{Enable: true, Extensions: []string{"png", "mp3"}})
	if !f.capture("/kcs/sound/kc9999/1.mp3", []byte("ID3 sound"), "") {
		t.Error("a live settings change did not apply")
	}
	f.p.SetSettings(Settings{Enable: false})
	if f.capture("/kcs2/img/a.png", png(2), "") {
		t.Error("captured with asset sync disabled")
	}
}

func TestNoSessionSendsNothingAndKeepsEverything(t *testing.T) {
	f := newFixture(t, fixtureOpts{noSession: true})
	for i := range 20 {
		f.capture(fmt.Sprintf("/kcs2/img/ship/%d.png", i), png(i), "")
	}
	eventually(t, "20 pending entries", func() bool { return f.store.Stats().Count == 20 })
	eventually(t, "the no-session log lines", func() bool {
		return f.logs.FilterMessage("Saved pending upload due to no session").Len() == 20
	})
	if n := f.srv.TotalRequests(); n != 0 {
		t.Fatalf("%d requests reached the API without a session", n)
	}
	// A session arrives: delivering the pending entries (as a retry pass does) uploads all.
	f.session.Set(testSession(f.srv))
	for _, e := range f.store.List() {
		if d := f.p.Deliver(context.Background(), e); d.Class != Success {
			t.Errorf("deliver %s = %+v", e.Context.Key, d)
		}
	}
	if f.srv.Uploads() != 20 || f.store.Stats().Count != 0 {
		t.Errorf("uploads %d, pending %d; want 20 and 0", f.srv.Uploads(), f.store.Stats().Count)
	}
	for _, e := range f.store.List() {
		if e.AttemptCount != 0 {
			t.Errorf("no-session attempts must not count: %s has %d", e.ID, e.AttemptCount)
		}
	}
}

// Each row of SPEC §5's table, at each stage, ends in the right place.
func TestDeliverOutcomesByStage(t *testing.T) {
	type want struct {
		class    Class
		pending  bool
		attempts int
		rejected bool
	}
	rows := []struct {
		name   string
		status int
		reset  bool
		want   want
	}{
		{"200", 0, false, want{Success, false, 0, false}},
		{"409", 409, false, want{Success, false, 0, false}},
		{"401", 401, false, want{Auth, true, 0, false}},
		{"403", 403, false, want{Auth, true, 0, false}},
		{"reset", 0, true, want{Transient, true, 1, false}},
		{"408", 408, false, want{Transient, true, 1, false}},
		{"425", 425, false, want{Transient, true, 1, false}},
		{"429", 429, false, want{Transient, true, 1, false}},
		{"500", 500, false, want{Transient, true, 1, false}},
		{"502", 502, false, want{Transient, true, 1, false}},
		{"503", 503, false, want{Transient, true, 1, false}},
		{"501", 501, false, want{Permanent, false, 0, true}},
		{"400", 400, false, want{Permanent, false, 0, true}},
		{"404", 404, false, want{Permanent, false, 0, true}},
		{"413", 413, false, want{Permanent, false, 0, true}},
		{"422", 422, false, want{Permanent, false, 0, true}},
	}
	for _, stage := range []assettest.Route{assettest.Handshake, assettest.Upload} {
		for _, r := range rows {
			t.Run(stage.String()+"/"+r.name, func(t *testing.T) {
				f := newFixture(t, fixtureOpts{noRun: true})
				body := png(7)
				a, _ := NewAsset("/kcs2/img/x.png", int64(len(body)), sum(body))
				e, _, err := f.store.Save(contextOf(a), f.srv.UploadEndpoint, nil, bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if r.status != 0 || r.reset {
					fault := assettest.Fault{Status: r.status, Reset: r.reset}
					// enough faults for the in-call retries and a stage-2 redo
					f.srv.AddFaults(stage, fault, fault, fault, fault)
				}
				d := f.p.Deliver(context.Background(), e)
				if d.Class != r.want.class {
					t.Fatalf("class = %v (%s), want %v", d.Class, d.Reason, r.want.class)
				}
				got, err := f.store.Get(e.ID)
				if (err == nil) != r.want.pending {
					t.Fatalf("pending = %v, want %v", err == nil, r.want.pending)
				}
				if err == nil && got.AttemptCount != r.want.attempts {
					t.Errorf("attempt_count = %d, want %d", got.AttemptCount, r.want.attempts)
				}
				if err == nil && r.want.attempts > 0 && got.LastError == "" {
					t.Error("last_error is empty after a counted attempt")
				}
				rej := mustGlob(t, filepath.Join(f.store.Dir(), "rejected", "*.json"))
				if (len(rej) == 1) != r.want.rejected {
					t.Errorf("rejected entries = %d, want rejected=%v", len(rej), r.want.rejected)
				}
			})
		}
	}
}

func TestRetryAfterSetsTheDueTime(t *testing.T) {
	for _, c := range []struct {
		header string
		want   time.Duration
	}{{"120", 120 * time.Second}, {"99999999", MaxRetryAfter}} {
		t.Run(c.header, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{noRun: true})
			body := png(3)
			a, _ := NewAsset("/kcs2/img/y.png", int64(len(body)), sum(body))
			e, _, _ := f.store.Save(contextOf(a), f.srv.UploadEndpoint, nil, bytes.NewReader(body))
			fault := assettest.Fault{Status: 503, RetryAfter: c.header}
			f.srv.AddFaults(assettest.Handshake, fault, fault, fault)
			before := time.Now()
			if d := f.p.Deliver(context.Background(), e); d.Class != Transient {
				t.Fatalf("class = %v", d.Class)
			}
			got, _ := f.store.Get(e.ID)
			if lo, hi := before.Add(c.want-time.Second), time.Now().Add(c.want+time.Second); got.NotBefore.Before(lo) || got.NotBefore.After(hi) {
				t.Errorf("NotBefore = %v, want about now + %v", got.NotBefore, c.want)
			}
		})
	}
}

func TestSameAssetCapturedConcurrentlyIsUploadedOnce(t *testing.T) {
	f := newFixture(t, fixtureOpts{workers: 4})
	body := png(42)
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.capture("/kcs2/img/common/same.png", body, "")
		}()
	}
	wg.Wait()
	eventually(t, "all 100 captures settled", func() bool {
		s := f.p.Stats()
		return s.Known+s.Committed+s.Shed == 100 && f.store.Stats().Count == 0
	})
	if n := f.srv.Requests(assettest.Upload); n != 1 {
		t.Errorf("%d stage-2 uploads for one asset captured 100 times, want 1", n)
	}
}

func TestKnownKeyMakesNoRequestAndNewHashUploads(t *testing.T) {
	f := newFixture(t, fixtureOpts{index: true})
	old := png(5)
	f.srv.Seed("assets/kcs2/img/known.png", sum(old), int64(len(old)))
	if err := f.p.o.Index.Refresh(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	f.srv.ResetCounters()
	f.capture("/kcs2/img/known.png", old, "")
	eventually(t, "the known capture to settle", func() bool { return f.p.Stats().Known == 1 })
	if n := f.srv.TotalRequests(); n != 0 {
		t.Errorf("%d requests for an asset in the remote index, want 0", n)
	}
	changed := png(6) // a new game version of the same file
	f.capture("/kcs2/img/known.png", changed, "")
	eventually(t, "the new hash's upload", func() bool { return f.srv.UploadCount("assets/kcs2/img/known.png", sum(changed)) == 1 })
}

func TestLiveAndRetryNeverUploadOneEntryAtOnce(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true})
	body := png(9)
	a, _ := NewAsset("/kcs2/img/z.png", int64(len(body)), sum(body))
	e, _, _ := f.store.Save(contextOf(a), f.srv.UploadEndpoint, nil, bytes.NewReader(body))
	f.srv.AddFaults(assettest.Handshake, assettest.Fault{Delay: 300 * time.Millisecond})
	var wg sync.WaitGroup
	results := make([]Delivery, 8)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = f.p.Deliver(context.Background(), e) }()
	}
	wg.Wait()
	held, ok := 0, 0
	for _, d := range results {
		switch {
		case d.Held:
			held++
		case d.Class == Success:
			ok++
		}
	}
	if n := f.srv.Requests(assettest.Handshake); n != 1 || ok != 1 {
		t.Errorf("%d handshakes, %d successes, %d held; want one upload, the rest held or already gone", n, ok, held)
	}
}

func TestShutdownLeavesCommittedEntriesPending(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true})
	f.srv.SetFaultFunc(assettest.Handshake, func(*http.Request, int) *assettest.Fault {
		return &assettest.Fault{Delay: time.Minute} // uploads hang until cancelled
	})
	f.p.Run(context.Background())
	for i := range 5 {
		f.capture(fmt.Sprintf("/kcs2/img/s/%d.png", i), png(i), "")
	}
	eventually(t, "5 commits", func() bool { return f.p.Stats().Committed == 5 })
	eventually(t, "uploads in flight", func() bool { return f.srv.Requests(assettest.Handshake) >= 1 })
	start := time.Now()
	if err := f.p.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with uploads in flight", d)
	}
	if n := f.store.Stats().Count; n != 5 {
		t.Errorf("%d entries pending after shutdown, want all 5", n)
	}
	for _, e := range f.store.List() {
		if e.AttemptCount != 0 {
			t.Errorf("a cancelled upload counted an attempt on %s", e.ID)
		}
	}
	if f.capture("/kcs2/img/late.png", png(99), "") {
		t.Error("a closed pipeline took a capture")
	}
}

// bigPNG is a body too large for a Spool's buffer: it streams to its own spool file and goes
// through the commit queue, not the journal.
func bigPNG(i int) []byte { return append(png(i), bytes.Repeat([]byte{byte(i)}, maxMemoryBody)...) }

// runUntilDone fails the test if fn blocks for long.
func runUntilDone(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { fn(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second): // 266 captures of 1 MiB take about 20 s under -race
		t.Fatal(what + " blocked")
	}
}

func TestCommitQueueFullShedsWithoutBlocking(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true}) // no committer: the queue fills
	runUntilDone(t, "captures on a full commit queue", func() {
		for i := range DefaultQueueSize + 10 {
			f.capture(fmt.Sprintf("/kcs2/img/q/%d.png", i), bigPNG(i), "")
		}
	})
	if s := f.p.Stats(); s.Shed != 10 {
		t.Errorf("shed = %d, want 10", s.Shed)
	}
	// One line for the burst (rate-limited), not ten.
	if n := f.logs.FilterMessage("capture shed: commit queue full").Len(); n < 1 || n >= 10 {
		t.Errorf("%d shed log lines for 10 sheds in a burst, want 1 (at most one a second)", n)
	}
	// The queued files, and the shed ones emptied and kept as spares for the next captures.
	if n := len(mustGlob(t, filepath.Join(f.dir, "spool", "capture-*"))) - len(f.p.spares); n != DefaultQueueSize {
		t.Errorf("%d spool files besides the spares, want %d", n, DefaultQueueSize)
	}
}

// Small captures wait in the journal up to MaxSpoolBytes; past it they are shed, counted and
// logged, without blocking the client.
func TestSpoolFullShedsWithoutBlocking(t *testing.T) {
	body := func(i int) []byte { return append(png(i), make([]byte, 700)...) } // ~1 KB
	// Each takes a 4 KiB block of the journal: room for about 20.
	f := newFixture(t, fixtureOpts{noRun: true, maxSpoolBytes: 80 << 10})
	runUntilDone(t, "captures on a full spool", func() {
		for i := range 40 {
			f.capture(fmt.Sprintf("/kcs2/img/q/%d.png", i), body(i), "")
		}
	})
	s := f.p.Stats()
	if s.Shed < 15 || s.Shed > 25 || f.p.Backlog() != int(s.Captured-s.Shed) {
		t.Errorf("40 captures of 1 KB (4 KiB records) into an 80 KiB spool: shed %d, waiting %d", s.Shed, f.p.Backlog())
	}
	if n := f.logs.FilterMessage("capture shed: spool full").Len(); n != 1 {
		t.Errorf("%d 'spool full' lines, want 1", n)
	}
	// The ones taken are committed and uploaded once the pipeline runs.
	f.p.Run(context.Background())
	t.Cleanup(func() { f.p.Close() })
	eventually(t, "the spooled captures uploaded", func() bool {
		return f.p.Stats().Uploaded == s.Captured-s.Shed
	})
}

func TestStaleSpoolFilesAreSweptAtStart(t *testing.T) {
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	os.MkdirAll(spool, 0o700)
	os.WriteFile(filepath.Join(spool, "capture-123"), []byte("half"), 0o600)
	if err := sweepSpool(spool, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	if n := len(mustGlob(t, filepath.Join(spool, "*"))); n != 0 {
		t.Errorf("%d stale spool files left", n)
	}
}
