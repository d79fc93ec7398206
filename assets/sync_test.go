package assets

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/pending"
	"github.com/fusou-proxy/fusou-proxy/retry"
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
	workers   int // 0 means 2
	index     bool
	// noRun leaves the pipeline not running: captures wait in the commit queue.
	noRun bool
	// maxAssetBytes is PipelineOptions.MaxAssetBytes; 0 means MaxAssetBytes.
	maxAssetBytes int64
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
	if o.workers == 0 {
		o.workers = 2
	}
	if o.maxAssetBytes == 0 {
		o.maxAssetBytes = MaxAssetBytes
	}
	p, err := NewPipeline(PipelineOptions{Store: st, Uploader: up, Index: ix, Session: sess,
		Endpoint: srv.UploadEndpoint, Workers: o.workers, QueueSize: 256, MaxAssetBytes: o.maxAssetBytes,
		Settings: Settings{Enable: true, Extensions: []string{"png", "jpg", "json"}}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the store's: the pipeline closes first. A pipeline never run releases
	// its queue, closing the drafts (Windows cannot remove the folder with a file open).
	t.Cleanup(func() { p.Close() })
	if !o.noRun {
		p.Run(context.Background())
	}
	return &fixture{srv: srv, store: st, session: sess, p: p, logs: logs, dir: dir}
}

// request is a GET of urlPath on the game server.
func request(urlPath string) *http.Request {
	return &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: "https", Host: "w01y.kancolle-server.com", Path: urlPath}}
}

// encode returns body as the server sends it with encoding ("" for identity; "deflate-raw" is
// deflate without its zlib wrapper, as some servers send it) and the Content-Encoding.
func encode(encoding string, body []byte) (wire []byte, header string) {
	var b bytes.Buffer
	var w interface {
		Write([]byte) (int, error)
		Close() error
	}
	header = encoding
	switch encoding {
	case "":
		return body, ""
	case "gzip":
		w = gzip.NewWriter(&b)
	case "deflate":
		w = zlib.NewWriter(&b)
	case "deflate-raw":
		w, _ = flate.NewWriter(&b, flate.DefaultCompression)
		header = "deflate"
	case "br":
		w = brotli.NewWriter(&b)
	default:
		panic("unknown encoding " + encoding)
	}
	w.Write(body) // a bytes.Buffer takes everything
	w.Close()
	return b.Bytes(), header
}

// capture feeds one response through the pipeline as the proxy would, body encoded with
// encoding (see encode) and sent in 4 KB chunks; it reports whether the pipeline took it.
func (f *fixture) capture(urlPath string, body []byte, encoding string) bool {
	wire, header := encode(encoding, body)
	resp := &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1}
	if header != "" {
		resp.Header.Set("Content-Encoding", header)
	}
	c := f.p.Start(request(urlPath), resp)
	if c == nil {
		return false
	}
	for len(wire) > 0 {
		n := min(len(wire), 4096)
		c.Write(wire[:n])
		wire = wire[n:]
	}
	c.Finish(true)
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

// storeFiles lists the files in the store folder but its lock, sorted: the .bin and .json of
// each entry, and whatever a capture left behind (a draft, a temp file).
func (f *fixture) storeFiles(t testing.TB) []string {
	t.Helper()
	des, err := os.ReadDir(f.store.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if !de.IsDir() && de.Name() != ".lock" {
			out = append(out, de.Name())
		}
	}
	slices.Sort(out)
	return out
}

// entryFiles is what storeFiles should list for the store's entries and nothing else.
func (f *fixture) entryFiles(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, e := range f.store.List() {
		out = append(out, e.ID+".bin", e.ID+".json")
	}
	slices.Sort(out)
	return out
}

// noStrayFiles waits until the store folder holds its entries' files and nothing else (an
// entry leaves the index before its files are removed), and fails t if that does not happen.
func (f *fixture) noStrayFiles(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, want := f.storeFiles(t), f.entryFiles(t)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store folder holds %q, want only the entries' files %q", got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestCaptureIsCommittedThenUploaded(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	body := png(1)
	if !f.capture("/kcs2/img/title/01.png", body, "") {
		t.Fatal("capture declined")
	}
	eventually(t, "the upload", func() bool { return f.srv.UploadCount("assets/kcs2/img/title/01.png", sum(body)) == 1 })
	eventually(t, "the entry's deletion", func() bool { return f.store.Stats().Count == 0 })
	if s := f.p.Stats(); s.Captured != 1 || s.Committed != 1 || s.Uploaded != 1 || s.Queued != 0 || s.Shed != 0 {
		t.Errorf("stats = %+v", s)
	}
	if err := f.p.Close(); err != nil {
		t.Fatal(err)
	}
	f.noStrayFiles(t) // and there are no entries

}

func mustGlob(t testing.TB, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNewPipelineWantsItsLimits(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true})
	good := f.p.o
	good.Index = nil
	for name, edit := range map[string]func(*PipelineOptions){
		"no workers":         func(o *PipelineOptions) { o.Workers = 0 },
		"no queue":           func(o *PipelineOptions) { o.QueueSize = 0 },
		"no max asset bytes": func(o *PipelineOptions) { o.MaxAssetBytes = 0 },
		"no store":           func(o *PipelineOptions) { o.Store = nil },
	} {
		o := good
		edit(&o)
		if p, err := NewPipeline(o); err == nil {
			p.Close()
			t.Errorf("%s: NewPipeline accepted %+v", name, o)
		}
	}
	p, err := NewPipeline(good)
	if err != nil {
		t.Fatalf("NewPipeline with every limit set: %v", err)
	}
	p.Close()
}

// The uploaded bytes are the resource itself (SPEC §4): every encoding the proxy can undo is
// decoded, and the entry holds the decoded bytes.
func TestEncodedBodyIsUploadedDecoded(t *testing.T) {
	for _, enc := range []string{"gzip", "deflate", "deflate-raw", "br"} {
		t.Run(enc, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{noSession: true}) // the entry stays, to be read
			body := []byte(`{"api_result":1,"ships":[1,2,3],"pad":"` + string(bytes.Repeat([]byte("x"), 5000)) + `"}`)
			if wire, _ := encode(enc, body); bytes.Equal(wire, body) {
				t.Fatal("the wire bytes are the body")
			}
			f.capture("/kcs2/resources/world.json", body, enc)
			key := "assets/kcs2/resources/world.json"
			eventually(t, "the commit", func() bool { return len(f.store.List()) == 1 })
			// The worker's own try, without a session, must be over before the test's Deliver,
			// which would otherwise find the entry held.
			eventually(t, "the worker's try", func() bool { return f.p.Stats().Auth >= 1 })
			e := f.store.List()
			if len(e) != 1 || e[0].Context.FileSize != int64(len(body)) || e[0].Context.ContentType != "application/json" {
				t.Fatalf("entries = %+v, want one of %d bytes", e, len(body))
			}
			r, err := f.store.Open(e[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("entry holds %d bytes (%v), want the decoded %d", len(got), err, len(body))
			}
			f.session.Set(testSession(f.srv))
			if d := f.p.Deliver(context.Background(), e[0], true); d.Class != Success {
				t.Fatalf("deliver = %+v", d)
			}
			if n := f.srv.UploadCount(key, sum(body)); n != 1 {
				t.Errorf("%d uploads of the decoded bytes, want 1", n)
			}
		})
	}
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
	for _, e := range f.store.List() {
		if e.AttemptCount != 0 {
			t.Errorf("no-session attempts must not count: %s has %d", e.ID, e.AttemptCount)
		}
	}
	// A session arrives: delivering the pending entries (as a retry pass does) uploads all.
	f.session.Set(testSession(f.srv))
	for _, e := range f.store.List() {
		if d := f.p.Deliver(context.Background(), e, true); d.Class != Success || d.Outcome() != retry.Delivered {
			t.Errorf("deliver %s = %+v", e.Context.Key, d)
		}
	}
	if f.srv.Uploads() != 20 || f.store.Stats().Count != 0 {
		t.Errorf("uploads %d, pending %d; want 20 and 0", f.srv.Uploads(), f.store.Stats().Count)
	}
}

// outcomeOf is what the retry service counts for each class of upload result.
var outcomeOf = map[Class]retry.Outcome{Success: retry.Delivered, Auth: retry.Unauthorized,
	Transient: retry.Failed, Permanent: retry.Rejected}

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
				d := f.p.Deliver(context.Background(), e, true)
				if d.Class != r.want.class {
					t.Fatalf("class = %v (%s), want %v", d.Class, d.Reason, r.want.class)
				}
				if o, want := d.Outcome(), outcomeOf[r.want.class]; o != want {
					t.Errorf("outcome = %v, want %v", o, want)
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
			if d := f.p.Deliver(context.Background(), e, true); d.Class != Transient {
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
		wg.Go(func() { f.capture("/kcs2/img/common/same.png", body, "") })
	}
	wg.Wait()
	eventually(t, "all 100 captures settled", func() bool {
		s := f.p.Stats()
		return s.Known+s.Committed+s.Shed == 100 && f.store.Stats().Count == 0
	})
	if n := f.srv.Requests(assettest.Upload); n != 1 {
		t.Errorf("%d stage-2 uploads for one asset captured 100 times, want 1", n)
	}
	if s := f.p.Stats(); s.Committed != 1 || s.Shed != 0 {
		t.Errorf("stats = %+v, want 1 committed, the rest known", s)
	}
	f.noStrayFiles(t) // the duplicates' drafts are gone
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

// A delivery that does not count (a forced retry pass sending an entry before it is due)
// leaves the entry's attempts and due time as they were.
func TestUncountedDeliveryRecordsNoAttempt(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true})
	body := png(4)
	a, _ := NewAsset("/kcs2/img/early.png", int64(len(body)), sum(body))
	e, _, err := f.store.Save(contextOf(a), f.srv.UploadEndpoint, nil, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	fault := assettest.Fault{Status: 503, RetryAfter: "120"}
	f.srv.AddFaults(assettest.Handshake, fault, fault, fault)
	d := f.p.Deliver(context.Background(), e, false)
	if d.Class != Transient || d.Outcome() != retry.Failed {
		t.Fatalf("deliver = %+v, want a transient failure", d)
	}
	got, err := f.store.Get(e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.AttemptCount != 0 || !got.NotBefore.IsZero() || got.LastError != "" {
		t.Errorf("an uncounted delivery recorded attempts %d, not before %v, last error %q",
			got.AttemptCount, got.NotBefore, got.LastError)
	}
}

// Deliver's other outcomes, as the retry service sees them.
func TestDeliveryOutcomes(t *testing.T) {
	for _, c := range []struct {
		d    Delivery
		want retry.Outcome
	}{
		{Delivery{Held: true}, retry.Busy},
		{Delivery{Class: Transient, Cancelled: true}, retry.Busy},
		{Delivery{Dropped: true}, retry.Dropped},
	} {
		if got := c.d.Outcome(); got != c.want {
			t.Errorf("%+v.Outcome() = %v, want %v", c.d, got, c.want)
		}
	}
}

// The live workers and a retry pass deliver through the same Deliver: an entry held by one is
// left alone by the others, so it is sent once.
func TestLiveAndRetryNeverUploadOneEntryAtOnce(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true})
	body := png(9)
	a, _ := NewAsset("/kcs2/img/z.png", int64(len(body)), sum(body))
	e, _, _ := f.store.Save(contextOf(a), f.srv.UploadEndpoint, nil, bytes.NewReader(body))
	f.srv.AddFaults(assettest.Handshake, assettest.Fault{Delay: 300 * time.Millisecond})
	svc := retry.New(retry.Options{Store: f.store, Settings: retry.Settings{Concurrency: 2},
		Deliver: func(ctx context.Context, e pending.Entry, count bool) (retry.Outcome, string) {
			d := f.p.Deliver(ctx, e, count)
			return d.Outcome(), d.Reason
		}})
	svc.Start(context.Background())
	t.Cleanup(svc.Stop)
	var wg sync.WaitGroup
	results := make([]Delivery, 8)
	for i := range results {
		wg.Go(func() { results[i] = f.p.Deliver(context.Background(), e, true) })
	}
	wg.Go(func() {
		_, seq := svc.Trigger("test", true)
		if _, err := svc.Wait(context.Background(), seq); err != nil {
			t.Error(err)
		}
	})
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
	if n := f.srv.Requests(assettest.Handshake); n != 1 || ok > 1 || f.srv.UploadCount(a.Key, a.ContentHash) != 1 {
		t.Errorf("%d handshakes, %d live successes, %d held; want one upload, the rest held or already gone", n, ok, held)
	}
	if n := f.store.Stats().Count; n != 0 {
		t.Errorf("%d entries left after the upload", n)
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
	if n := f.store.Stats().Count; n != 5 || f.store.Unsynced() != 0 {
		t.Errorf("%d entries pending after shutdown (%d unsynced), want all 5, synced", n, f.store.Unsynced())
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
