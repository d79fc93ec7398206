package retry

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fusou-proxy/fusou-proxy/pending"
)

// mustStore opens a real pending store holding n small entries.
func mustStore(tb testing.TB, n int, opts pending.Options) *pending.Store {
	tb.Helper()
	opts.Dir = tb.TempDir()
	st, err := pending.Open(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	for i := range n {
		body := fmt.Sprintf("asset %d", i)
		c := pending.Context{Key: fmt.Sprintf("assets/kcs2/img/%03d.png", i), RelativePath: fmt.Sprintf("kcs2/img/%03d.png", i),
			FileName: fmt.Sprintf("%03d.png", i), ContentType: "image/png"}
		if _, _, err := st.Save(c, "https://api.example/upload", nil, strings.NewReader(body)); err != nil {
			tb.Fatal(err)
		}
	}
	return st
}

// fakeDeliverer settles entries in a real store as the asset pipeline would, with a
// switchable session and an optional gate that holds every delivery. Its Deliver method is the
// service's DeliverFunc.
type fakeDeliverer struct {
	store   *pending.Store
	session atomic.Bool
	gate    chan struct{} // if not nil, each delivery waits for it (or ctx)
	fail    atomic.Bool   // transient failure instead of success
	// entered, if not nil, receives a value as each delivery starts (before the gate).
	entered chan struct{}

	mu          sync.Mutex
	calls       int
	active, max int
}

var _ DeliverFunc = (*fakeDeliverer)(nil).Deliver

func (f *fakeDeliverer) Deliver(ctx context.Context, e pending.Entry, count bool) (Outcome, string) {
	f.mu.Lock()
	f.calls++
	f.active++
	f.max = max(f.max, f.active)
	f.mu.Unlock()
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	defer func() { f.mu.Lock(); f.active--; f.mu.Unlock() }()
	// The session is read as the delivery starts (as the uploader reads it before sending), so
	// a session stored while this delivery waits at the gate applies only to later ones.
	authorized := f.session.Load()
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return Busy, "cancelled"
		}
	}
	if !authorized {
		return Unauthorized, "no session"
	}
	if f.fail.Load() {
		if !count {
			return Failed, "503 Service Unavailable"
		}
		if _, err := f.store.RecordAttempt(e.ID, time.Now(), "503 Service Unavailable", time.Time{}); err != nil {
			return Dropped, err.Error()
		}
		return Failed, "503 Service Unavailable"
	}
	if err := f.store.Delete(e.ID); err != nil {
		return Dropped, err.Error()
	}
	return Delivered, ""
}

func (f *fakeDeliverer) stats() (calls, maxActive int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.max
}

// passes collects every pass summary.
type passes struct {
	mu   sync.Mutex
	all  []Summary
	seen chan Summary
}

func newPasses() *passes { return &passes{seen: make(chan Summary, 10000)} }

func (p *passes) add(s Summary) {
	p.mu.Lock()
	p.all = append(p.all, s)
	p.mu.Unlock()
	p.seen <- s
}

func (p *passes) list() []Summary {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Summary(nil), p.all...)
}

func startService(t *testing.T, o Options) *Service {
	t.Helper()
	s := New(o)
	s.Start(context.Background())
	t.Cleanup(s.Stop)
	return s
}

// waitEntered waits until n more deliveries of d have started, failing after a deadline.
func waitEntered(t *testing.T, d *fakeDeliverer, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for i := range n {
		select {
		case <-d.entered:
		case <-deadline:
			t.Fatalf("only %d of %d deliveries started within 10 s", i, n)
		}
	}
}

// waitPass returns the next pass summary, failing after a deadline.
func waitPass(t *testing.T, p *passes) Summary {
	t.Helper()
	select {
	case s := <-p.seen:
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("no pass ended within 20 s")
		return Summary{}
	}
}

func TestManyConcurrentTriggersSingleFlight(t *testing.T) {
	// One entry that always fails transiently: every pass does real work (an fsync'd
	// attempt record), as passes do, so triggers arriving meanwhile must coalesce.
	st := mustStore(t, 1, pending.Options{})
	core, logs := observer.New(zap.InfoLevel)
	p := newPasses()
	d := &fakeDeliverer{store: st}
	d.session.Store(true)
	d.fail.Store(true)
	s := startService(t, Options{Store: st, Deliver: d.Deliver, OnPass: p.add, Logger: zap.New(core),
		Settings: Settings{Interval: time.Hour}})

	type trig struct {
		at  time.Time
		seq uint64
	}
	const goroutines, each = 50, 20 // 1,000 triggers
	trigs := make(chan trig, goroutines*each)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				at := time.Now()
				_, seq := s.Trigger("test", true)
				trigs <- trig{at, seq}
			}
		}()
	}
	wg.Wait()
	close(trigs)
	var maxSeq uint64
	var all []trig
	for tr := range trigs {
		if tr.seq == 0 {
			t.Fatal("Trigger returned seq 0 on a running service")
		}
		maxSeq = max(maxSeq, tr.seq)
		all = append(all, tr)
	}
	if _, err := s.Wait(context.Background(), maxSeq); err != nil {
		t.Fatal(err)
	}
	bySeq := map[uint64]Summary{}
	for _, sum := range p.list() {
		bySeq[sum.Seq] = sum
	}
	for _, tr := range all {
		sum, ok := bySeq[tr.seq]
		if !ok {
			t.Fatalf("the pass %d that should serve a trigger never ran", tr.seq)
		}
		if sum.Started.Before(tr.at) {
			t.Fatalf("trigger at %v was served by pass %d that started before it (%v)", tr.at, tr.seq, sum.Started)
		}
	}
	// Passes never overlap: the log alternates Starting / Finished.
	var open bool
	for _, e := range logs.All() {
		switch e.Message {
		case "Starting upload retry process":
			if open {
				t.Fatal("a pass started while another was running")
			}
			open = true
		case "Finished upload retry process":
			open = false
		}
	}
	if n := len(p.list()); n > goroutines*each/10 {
		t.Errorf("%d passes for %d triggers: triggers during a pass should coalesce", n, goroutines*each)
	}
	t.Logf("%d triggers → %d passes", goroutines*each, len(p.list()))
}

func TestTriggersDuringAPassQueueExactlyOne(t *testing.T) {
	st := mustStore(t, 1, pending.Options{})
	p := newPasses()
	d := &fakeDeliverer{store: st, gate: make(chan struct{}), entered: make(chan struct{}, 16)}
	d.session.Store(true)
	s := startService(t, Options{Store: st, Deliver: d.Deliver, OnPass: p.add, Settings: Settings{Interval: time.Hour}})

	// startup pass is blocked in the gate; 1,000 more triggers queue one pass.
	waitEntered(t, d, 1)
	var wg sync.WaitGroup
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if started, seq := s.Trigger("test", false); started || seq != 2 {
				t.Errorf("Trigger during a pass = %v, %d; want queued for pass 2", started, seq)
			}
		}()
	}
	wg.Wait()
	close(d.gate)
	if _, err := s.Wait(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	if got := s.Status(); got.Running || got.Queued || got.LastPass.Seq != 2 {
		t.Errorf("status after the queued pass = %+v; want exactly 2 passes and nothing queued", got)
	}
	if n := len(p.list()); n != 2 {
		t.Errorf("%d passes, want 2", n)
	}
}

func TestSessionPostedMidPassIsNotLost(t *testing.T) {
	st := mustStore(t, 6, pending.Options{})
	p := newPasses()
	gate := make(chan struct{})
	d := &fakeDeliverer{store: st, gate: gate}
	// A session exists but the server refuses it (expired): the start-up pass fails auth.
	s := startService(t, Options{Store: st, Deliver: d.Deliver, OnPass: p.add, HasSession: func() bool { return true },
		Settings: Settings{Interval: time.Hour, Concurrency: 1}})
	// The start-up pass is in its first delivery. The new session arrives now.
	gate <- struct{}{}
	d.session.Store(true)
	s.Trigger("session", false)
	close(gate)

	first := waitPass(t, p)
	if first.Stopped != "auth" || first.Succeeded != 0 {
		t.Errorf("first pass = %+v; want stopped by auth with nothing uploaded", first)
	}
	second := waitPass(t, p)
	if second.Succeeded != 6 || second.Remaining != 0 {
		t.Errorf("second pass = %+v; want all 6 uploaded", second)
	}
	for _, e := range st.List() {
		t.Errorf("entry %s still pending", e.ID)
	}
}

func TestAuthFailureStopsThePassWithoutCounting(t *testing.T) {
	st := mustStore(t, 5, pending.Options{})
	p := newPasses()
	d := &fakeDeliverer{store: st} // the server refuses the session: every delivery is Unauthorized
	var session atomic.Bool
	s := startService(t, Options{Store: st, Deliver: d.Deliver, OnPass: p.add, HasSession: session.Load,
		Settings: Settings{Interval: time.Hour, Concurrency: 1}})
	session.Store(true)
	if started, _ := s.Trigger("manual", true); !started {
		t.Fatal("no pass should have been running")
	}
	sum := waitPass(t, p)
	if sum.Stopped != "auth" {
		t.Errorf("stopped = %q, want auth", sum.Stopped)
	}
	if calls, _ := d.stats(); calls != 1 {
		t.Errorf("%d deliveries, want 1: an auth failure stops the pass", calls)
	}
	for _, e := range st.List() {
		if e.AttemptCount != 0 {
			t.Errorf("entry %s attempt_count = %d; auth failures are not counted", e.ID, e.AttemptCount)
		}
	}
	if sum.Remaining != 5 {
		t.Errorf("remaining = %d, want 5", sum.Remaining)
	}
}

func TestNoSessionPassSendsNothing(t *testing.T) {
	st := mustStore(t, 3, pending.Options{})
	p := newPasses()
	d := &fakeDeliverer{store: st}
	s := startService(t, Options{Store: st, Deliver: d.Deliver, OnPass: p.add, HasSession: func() bool { return false }})
	if started, _ := s.Trigger("manual", true); !started {
		t.Fatal("no pass should run at start-up without a session")
	}
	if sum := waitPass(t, p); sum.Stopped != "no session" || sum.Remaining != 3 {
		t.Errorf("pass = %+v; want stopped for no session, 3 remaining", sum)
	}
	if calls, _ := d.stats(); calls != 0 {
		t.Errorf("%d deliveries without a session, want 0", calls)
	}
}

func TestBackoff(t *testing.T) {
	const iv = 60 * time.Second
	for n, want := range map[int]time.Duration{0: 0, 1: iv, 2: 2 * iv, 3: 4 * iv, 6: 32 * iv, 7: time.Hour, 50: time.Hour} {
		if got := Backoff(iv, n); got != want {
			t.Errorf("Backoff(%v, %d) = %v, want %v", iv, n, got, want)
		}
	}
}

func TestDueAtJitterWithinTwentyPercent(t *testing.T) {
	last := time.Unix(1_800_000_000, 0)
	lo, hi := math.Inf(1), math.Inf(-1)
	for i := range 2000 {
		for n := 1; n <= 4; n++ {
			e := pending.Entry{Meta: pending.Meta{ID: fmt.Sprintf("id-%d", i), AttemptCount: n, LastAttemptAt: last.Unix()}}
			f := float64(DueAt(e, time.Minute).Sub(last)) / float64(Backoff(time.Minute, n))
			lo, hi = min(lo, f), max(hi, f)
			if again := DueAt(e, time.Minute); !again.Equal(DueAt(e, time.Minute)) {
				t.Fatal("DueAt is not stable for one entry")
			}
		}
	}
	if lo < 0.8 || hi > 1.2 {
		t.Errorf("jitter spans [%.3f, %.3f], want within [0.8, 1.2]", lo, hi)
	}
	if lo > 0.85 || hi < 1.15 {
		t.Errorf("jitter spans only [%.3f, %.3f]: it should use most of ±20 %%", lo, hi)
	}
	// A Retry-After hint later than the backoff wins.
	e := pending.Entry{Meta: pending.Meta{ID: "x", AttemptCount: 1, LastAttemptAt: last.Unix()}, NotBefore: last.Add(2 * time.Hour)}
	if got := DueAt(e, time.Minute); !got.Equal(last.Add(2 * time.Hour)) {
		t.Errorf("DueAt with Retry-After = %v, want %v", got, last.Add(2*time.Hour))
	}
	if got := DueAt(pending.Entry{}, time.Minute); !got.IsZero() {
		t.Errorf("a never-tried entry is due at once, got %v", got)
	}
}

func TestPassHonoursDueTimesUnlessForced(t *testing.T) {
	st := mustStore(t, 4, pending.Options{})
	list := st.List()
	// Two entries were just tried (not due), two never (due).
	for _, e := range list[:2] {
		if _, err := st.RecordAttempt(e.ID, time.Now(), "503", time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	p := newPasses()
	d := &fakeDeliverer{store: st}
	d.session.Store(true)
	s := startService(t, Options{Store: st, Deliver: d.Deliver, OnPass: p.add, Settings: Settings{Interval: time.Hour}})
	if sum := waitPass(t, p); sum.Succeeded != 2 || sum.Remaining != 2 { // the start-up pass
		t.Errorf("unforced pass = %+v; want the 2 due entries uploaded, 2 left", sum)
	}
	s.Trigger("manual", true)
	if sum := waitPass(t, p); sum.Succeeded != 2 || sum.Remaining != 0 {
		t.Errorf("forced pass = %+v; want the 2 not-yet-due entries uploaded too", sum)
	}
}

func TestTransientFailureCountsAttempt(t *testing.T) {
	st := mustStore(t, 2, pending.Options{})
	p := newPasses()
	d := &fakeDeliverer{store: st}
	d.session.Store(true)
	d.fail.Store(true)
	startService(t, Options{Store: st, Deliver: d.Deliver, OnPass: p.add, Settings: Settings{Interval: time.Hour}})
	if sum := waitPass(t, p); sum.Failed != 2 || sum.Remaining != 2 {
		t.Errorf("pass = %+v; want 2 failed, 2 remaining", sum)
	}
	for _, e := range st.List() {
		if e.AttemptCount != 1 || e.LastError == "" {
			t.Errorf("entry %s: attempt_count %d, last_error %q; want 1 and a reason", e.ID, e.AttemptCount, e.LastError)
		}
	}
}

// TestExpiredAndExhaustedAreDiscarded: Start discards at once what Settings' TTL and
// MaxAttempts give up on, and each pass what has come due since; an entry in use is left for a
// later pass, and SetSettings applies from the next pass.
func TestExpiredAndExhaustedAreDiscarded(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	var clock atomic.Int64
	clock.Store(time.Now().Unix())
	now := func() time.Time { return time.Unix(clock.Load(), 0) }
	st := mustStore(t, 3, pending.Options{Logger: zap.New(core), Now: now})
	list := st.List()
	for range 2 { // list[0] reaches max_attempts
		if _, err := st.RecordAttempt(list[0].ID, now(), "503", time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	p := newPasses()
	d := &fakeDeliverer{store: st, gate: make(chan struct{})} // nothing is delivered
	policy := Settings{Interval: time.Hour, TTL: time.Hour, MaxAttempts: 2}
	s := startService(t, Options{Store: st, Deliver: d.Deliver, OnPass: p.add, HasSession: func() bool { return false },
		Now: now, Settings: policy})
	if got := ids(st.List()); !slices.Equal(got, ids(list[1:])) {
		t.Fatalf("after start-up %v remain, want %v (the exhausted one discarded)", got, ids(list[1:]))
	}

	// The rest are past the TTL, which no longer applies.
	clock.Add(2 * 3600)
	s.SetSettings(Settings{Interval: time.Hour})
	s.Trigger("manual", true)
	if sum := waitPass(t, p); sum.Discarded != 0 || sum.Remaining != 2 {
		t.Errorf("pass without a TTL = %+v; want nothing discarded, 2 remaining", sum)
	}

	s.SetSettings(policy)
	release, ok := st.TryHold(list[1].ID) // being uploaded: left for a later pass
	if !ok {
		t.Fatal("TryHold failed")
	}
	s.Trigger("manual", true)
	if sum := waitPass(t, p); sum.Discarded != 1 || sum.Remaining != 1 {
		t.Errorf("pass with one expired entry held = %+v; want 1 discarded, 1 remaining", sum)
	}
	release()
	s.Trigger("manual", true)
	if sum := waitPass(t, p); sum.Discarded != 1 || sum.Remaining != 0 {
		t.Errorf("pass after the release = %+v; want 1 discarded, none remaining", sum)
	}
	reasons := map[string]string{}
	for _, e := range logs.FilterMessage("Discarded pending upload").All() {
		reasons[e.ContextMap()["id"].(string)] = e.ContextMap()["reason"].(string)
	}
	want := map[string]string{list[0].ID: pending.ReasonMaxAttempts, list[1].ID: pending.ReasonExpired, list[2].ID: pending.ReasonExpired}
	if !maps.Equal(reasons, want) {
		t.Errorf("discard reasons = %v; want %v", reasons, want)
	}
}

func ids(es []pending.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// TestDiscardReason: an entry expires at exactly TTL old and is exhausted at exactly
// MaxAttempts attempts; 0 turns either off; an unsupported entry only expires.
func TestDiscardReason(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	policy := Settings{TTL: time.Hour, MaxAttempts: 3}
	entry := func(age time.Duration, attempts int, kind string) pending.Entry {
		return pending.Entry{Meta: pending.Meta{ID: "id", CreatedAt: now.Add(-age).Unix(), AttemptCount: attempts}, Unsupported: kind}
	}
	const year = 365 * 24 * time.Hour
	for _, tt := range []struct {
		name string
		e    pending.Entry
		st   Settings
		want string
	}{
		{"new", entry(0, 0, ""), policy, ""},
		{"a second before the TTL", entry(time.Hour-time.Second, 0, ""), policy, ""},
		{"exactly the TTL", entry(time.Hour, 0, ""), policy, pending.ReasonExpired},
		{"long past the TTL", entry(48*time.Hour, 0, ""), policy, pending.ReasonExpired},
		{"created after now (the clock stepped back)", entry(-time.Hour, 0, ""), policy, ""},
		{"one attempt short", entry(0, 2, ""), policy, ""},
		{"exactly MaxAttempts", entry(0, 3, ""), policy, pending.ReasonMaxAttempts},
		{"past MaxAttempts", entry(0, 9, ""), policy, pending.ReasonMaxAttempts},
		{"both: expired first", entry(2*time.Hour, 9, ""), policy, pending.ReasonExpired},
		{"no TTL: never expires", entry(10*year, 0, ""), Settings{MaxAttempts: 3}, ""},
		{"no MaxAttempts: never exhausted", entry(0, 1000, ""), Settings{TTL: time.Hour}, ""},
		{"no limits at all", entry(10*year, 1000, ""), Settings{}, ""},
		{"unsupported: attempts never count", entry(0, 9, pending.KindCustom), policy, ""},
		{"unsupported a second before the TTL", entry(time.Hour-time.Second, 9, pending.KindSnapshot), policy, ""},
		{"unsupported at the TTL", entry(time.Hour, 0, pending.KindNoContext), policy, pending.ReasonExpired},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := DiscardReason(tt.e, now, tt.st); got != tt.want {
				t.Errorf("DiscardReason = %q, want %q", got, tt.want)
			}
		})
	}
}

// writeUnsupported writes an entry the store keeps but does not upload (a FUSOU Custom
// context) into dir, created at created with attempts attempts.
func writeUnsupported(t *testing.T, dir, id string, created time.Time, attempts int) {
	t.Helper()
	meta, err := json.Marshal(map[string]any{
		"id": id, "target_url": "localfs", "headers": map[string]string{}, "created_at": created.Unix(),
		"attempt_count": attempts, "last_attempt_at": nil, "file_path": id + ".bin",
		"context": `{"Custom":{"provider":"r2","operation":"localfs_write"}}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, id+".json"), meta, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, id+".bin"), []byte("custom"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDiscard runs Discard on a real store: it removes exactly the entries DiscardReason names,
// each logged "Discarded pending upload" with its reason, skips an entry being uploaded until a
// later call, and removes unsupported entries by their TTL alone.
func TestDiscard(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	start := time.Unix(1_800_000_000, 0)
	var clock atomic.Int64
	clock.Store(start.Unix())
	now := func() time.Time { return time.Unix(clock.Load(), 0) }
	policy := Settings{TTL: time.Hour, MaxAttempts: 2}

	dir := t.TempDir()
	const oldKind, triedKind = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
	writeUnsupported(t, dir, oldKind, start, 0)
	writeUnsupported(t, dir, triedKind, start.Add(30*time.Minute), 7) // attempts do not count
	st, err := pending.Open(pending.Options{Dir: dir, Logger: zap.New(core), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if got := len(st.Unsupported()); got != 2 {
		t.Fatalf("%d unsupported entries, want 2", got)
	}
	save := func(key string, attempts int) pending.Entry {
		t.Helper()
		e, _, err := st.Save(pending.Context{Key: key}, "https://api.example/upload", nil, strings.NewReader(key))
		if err != nil {
			t.Fatal(err)
		}
		for range attempts {
			if e, err = st.RecordAttempt(e.ID, now(), "503", time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		return e
	}
	old := save("assets/old", 0)
	held := save("assets/held", 0)
	clock.Add(30 * 60)
	tired := save("assets/tired", 2)
	fresh := save("assets/fresh", 1)
	release, ok := st.TryHold(held.ID)
	if !ok {
		t.Fatal("TryHold failed")
	}
	clock.Add(30 * 60) // old, held and oldKind are now exactly TTL old

	if n := Discard(st, now(), policy); n != 3 {
		t.Errorf("Discard = %d, want 3 (old, tired, the old unsupported entry)", n)
	}
	reasons := func() map[string]string {
		out := map[string]string{}
		for _, l := range logs.FilterMessage("Discarded pending upload").All() {
			out[l.ContextMap()["id"].(string)] = l.ContextMap()["reason"].(string)
		}
		return out
	}
	want := map[string]string{old.ID: pending.ReasonExpired, tired.ID: pending.ReasonMaxAttempts, oldKind: pending.ReasonExpired}
	if got := reasons(); !maps.Equal(got, want) {
		t.Errorf("discard logs = %v, want %v", got, want)
	}
	if got, want := ids(st.List()), ids([]pending.Entry{held, fresh}); !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v (held, fresh)", got, want)
	}
	if got := ids(st.Unsupported()); !slices.Equal(got, []string{triedKind}) {
		t.Errorf("Unsupported = %v, want only the young one", got)
	}

	if n := Discard(st, now(), policy); n != 0 {
		t.Errorf("Discard with the expired entry still held = %d, want 0", n)
	}
	release()
	if n := Discard(st, now(), policy); n != 1 || reasons()[held.ID] != pending.ReasonExpired {
		t.Errorf("Discard after the release = %d, logs %v; want the held entry expired", n, reasons())
	}

	clock.Add(30 * 60) // fresh and triedKind reach the TTL
	if n := Discard(st, now(), policy); n != 2 || reasons()[fresh.ID] != pending.ReasonExpired || reasons()[triedKind] != pending.ReasonExpired {
		t.Errorf("Discard at the last TTL = %d, logs %v", n, reasons())
	}
	if len(st.List())+len(st.Unsupported()) != 0 {
		t.Errorf("entries left: %v %v", st.List(), st.Unsupported())
	}
	if names, _ := os.ReadDir(dir); len(names) != 1 { // .lock
		t.Errorf("folder holds %d names, want only .lock", len(names))
	}
}

// fakeStore is a Store whose Discard fails for the ids in refuse.
type fakeStore struct {
	list, unsupported []pending.Entry
	refuse            map[string]bool
	calls             map[string]string // id → reason Discard was called with
}

func (f *fakeStore) List() []pending.Entry        { return f.list }
func (f *fakeStore) Unsupported() []pending.Entry { return f.unsupported }
func (f *fakeStore) Discard(id, why string) error {
	f.calls[id] = why
	if f.refuse[id] {
		return fmt.Errorf("discard %s: %w", id, pending.ErrHeld)
	}
	return nil
}

// TestDiscardCountsRemovals: Discard asks the store to remove each listed and unsupported
// entry DiscardReason names, with that reason, touches no other, and counts only the removals
// that succeeded.
func TestDiscardCountsRemovals(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	mk := func(id string, age time.Duration, attempts int, kind string) pending.Entry {
		return pending.Entry{Meta: pending.Meta{ID: id, CreatedAt: now.Add(-age).Unix(), AttemptCount: attempts}, Unsupported: kind}
	}
	f := &fakeStore{
		list: []pending.Entry{mk("expired", 2*time.Hour, 0, ""), mk("tired", 0, 5, ""), mk("busy", 2*time.Hour, 0, ""),
			mk("fine", 0, 1, "")},
		unsupported: []pending.Entry{mk("old-kind", 2*time.Hour, 0, pending.KindSnapshot), mk("tried-kind", 0, 9, pending.KindCustom)},
		refuse:      map[string]bool{"busy": true},
		calls:       map[string]string{},
	}
	n := Discard(f, now, Settings{TTL: time.Hour, MaxAttempts: 5})
	if n != 3 {
		t.Errorf("Discard = %d, want 3 (the refused one not counted)", n)
	}
	want := map[string]string{"expired": pending.ReasonExpired, "tired": pending.ReasonMaxAttempts,
		"busy": pending.ReasonExpired, "old-kind": pending.ReasonExpired}
	if !maps.Equal(f.calls, want) {
		t.Errorf("Discard calls = %v, want %v", f.calls, want)
	}
}

func TestStopCancelsARunningPass(t *testing.T) {
	st := mustStore(t, 3, pending.Options{})
	p := newPasses()
	d := &fakeDeliverer{store: st, gate: make(chan struct{}), entered: make(chan struct{}, 16)} // blocks until cancelled
	d.session.Store(true)
	s := New(Options{Store: st, Deliver: d.Deliver, OnPass: p.add})
	s.Start(context.Background())
	waitEntered(t, d, 1)
	stopped := make(chan struct{})
	go func() { s.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return within 5 s")
	}
	if sum := waitPass(t, p); sum.Stopped != "shutdown" || sum.Remaining != 3 {
		t.Errorf("pass = %+v; want stopped by shutdown with all 3 entries kept", sum)
	}
	if started, _ := s.Trigger("late", true); started {
		t.Error("a stopped service started a pass")
	}
}

func TestConcurrencyAndLiveSettings(t *testing.T) {
	st := mustStore(t, 12, pending.Options{})
	p := newPasses()
	gate := make(chan struct{})
	d := &fakeDeliverer{store: st, gate: gate, entered: make(chan struct{}, 64)}
	s := startService(t, Options{Store: st, Deliver: d.Deliver, OnPass: p.add, HasSession: d.session.Load,
		Settings: Settings{Interval: time.Hour, Concurrency: 3}})
	d.session.Store(true) // after start-up, so that only our triggers start passes
	release := func(n int) {
		go func() {
			for range n {
				gate <- struct{}{}
			}
		}()
	}
	_, seq := s.Trigger("manual", true)
	// Three deliveries reach the gate at once (none can leave it yet); then let the pass finish.
	waitEntered(t, d, 3)
	release(12)
	if _, err := s.Wait(context.Background(), seq); err != nil {
		t.Fatal(err)
	}
	if _, m := d.stats(); m != 3 {
		t.Errorf("max deliveries at once = %d, want 3", m)
	}

	// A live change to concurrency 1 applies to the next pass.
	s.SetSettings(Settings{Interval: time.Hour, Concurrency: 1})
	for i := range 4 {
		c := pending.Context{Key: fmt.Sprintf("assets/more/%d.png", i), ContentType: "image/png", FileName: "x.png", RelativePath: "more/x.png"}
		if _, _, err := st.Save(c, "https://api.example/upload", nil, strings.NewReader(fmt.Sprint("more", i))); err != nil {
			t.Fatal(err)
		}
	}
	d.mu.Lock()
	d.max = 0
	d.mu.Unlock()
	release(4)
	_, seq = s.Trigger("manual", true)
	sum, err := s.Wait(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	if _, m := d.stats(); m != 1 || sum.Succeeded != 4 {
		t.Errorf("after SetSettings(concurrency 1): max at once %d, succeeded %d; want 1 and 4", m, sum.Succeeded)
	}
}

func TestTimerTriggersWhenDue(t *testing.T) {
	st := mustStore(t, 2, pending.Options{})
	p := newPasses()
	var session atomic.Bool
	d := &fakeDeliverer{store: st}
	d.session.Store(true)
	startService(t, Options{Store: st, Deliver: d.Deliver, OnPass: p.add, HasSession: session.Load,
		Settings: Settings{Interval: 20 * time.Millisecond}})
	session.Store(true) // after start-up: only the timer can start the pass
	sum := waitPass(t, p)
	if sum.Reason != "timer" || sum.Succeeded != 2 {
		t.Errorf("pass = %+v; want a timer pass uploading both entries", sum)
	}
}

// Forced passes during an outage count a failure only for entries that were due, so repeated
// manual retries cannot use up an entry's attempts and discard it.
func TestForcedPassesCountOnlyDueEntries(t *testing.T) {
	st := mustStore(t, 1, pending.Options{})
	d := &fakeDeliverer{store: st}
	d.session.Store(true)
	d.fail.Store(true)
	s := startService(t, Options{Store: st, Deliver: d.Deliver, Settings: Settings{Interval: time.Hour, MaxAttempts: 3}})
	// The start-up pass (1) finds the entry due and counts its failure; an unforced pass (2)
	// then finds it not due and leaves it.
	_, seq := s.Trigger("session", false)
	if _, err := s.Wait(context.Background(), seq); err != nil {
		t.Fatal(err)
	}
	only := func() pending.Entry {
		t.Helper()
		list := st.List()
		if len(list) != 1 {
			t.Fatalf("%d entries, want 1", len(list))
		}
		return list[0]
	}
	if got := only().AttemptCount; got != 1 {
		t.Fatalf("attempt_count after the first passes = %d, want 1", got)
	}
	for range 5 {
		_, seq := s.Trigger("manual", true)
		if sum, err := s.Wait(context.Background(), seq); err != nil || sum.Failed != 1 {
			t.Fatalf("forced pass = %+v, %v; want its one delivery failed", sum, err)
		}
	}
	if calls, _ := d.stats(); calls != 6 {
		t.Errorf("%d deliveries, want 6 (the start-up pass and the 5 forced ones)", calls)
	}
	if got := only().AttemptCount; got != 1 {
		t.Errorf("attempt_count after 5 forced passes before the entry was due = %d, want 1", got)
	}
}
