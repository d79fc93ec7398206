package retry

import (
	"context"
	"fmt"
	"math"
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
// switchable session and an optional gate that holds every delivery.
type fakeDeliverer struct {
	store   *pending.Store
	session atomic.Bool
	gate    chan struct{} // if not nil, each delivery waits for it (or ctx)
	fail    atomic.Bool   // transient failure instead of success

	mu          sync.Mutex
	calls       int
	active, max int
}

func (f *fakeDeliverer) Deliver(ctx context.Context, e pending.Entry, count bool) (Outcome, string) {
	f.mu.Lock()
	f.calls++
	f.active++
	f.max = max(f.max, f.active)
	f.mu.Unlock()
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
	st := mustStore(t, 1, pending.Options{MaxAttempts: -1})
	core, logs := observer.New(zap.InfoLevel)
	p := newPasses()
	d := &fakeDeliverer{store: st}
	d.session.Store(true)
	d.fail.Store(true)
	s := startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, Logger: zap.New(core),
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
	d := &fakeDeliverer{store: st, gate: make(chan struct{})}
	d.session.Store(true)
	s := startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, Settings: Settings{Interval: time.Hour}})

	// startup pass is blocked in the gate; 1,000 more triggers queue one pass.
	deadline := time.Now().Add(10 * time.Second)
	for calls, _ := d.stats(); calls == 0; calls, _ = d.stats() {
		if time.Now().After(deadline) {
			t.Fatal("the start-up pass never delivered")
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
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
	s := startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, HasSession: func() bool { return true },
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
	s := startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, HasSession: session.Load,
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
	s := startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, HasSession: func() bool { return false }})
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
	s := startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, Settings: Settings{Interval: time.Hour}})
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
	startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, Settings: Settings{Interval: time.Hour}})
	if sum := waitPass(t, p); sum.Failed != 2 || sum.Remaining != 2 {
		t.Errorf("pass = %+v; want 2 failed, 2 remaining", sum)
	}
	for _, e := range st.List() {
		if e.AttemptCount != 1 || e.LastError == "" {
			t.Errorf("entry %s: attempt_count %d, last_error %q; want 1 and a reason", e.ID, e.AttemptCount, e.LastError)
		}
	}
}

func TestExpiredAndExhaustedAreDiscarded(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	var clock atomic.Int64
	clock.Store(time.Now().Unix())
	now := func() time.Time { return time.Unix(clock.Load(), 0) }
	st := mustStore(t, 3, pending.Options{TTL: time.Hour, MaxAttempts: 2, Logger: zap.New(core), Now: now})
	list := st.List()
	for range 2 { // list[0] reaches max_attempts
		if _, err := st.RecordAttempt(list[0].ID, now(), "503", time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	p := newPasses()
	d := &fakeDeliverer{store: st, gate: make(chan struct{})} // nothing is delivered
	s := startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, HasSession: func() bool { return false }, Now: now})
	if got := len(st.List()); got != 2 {
		t.Fatalf("after start-up %d entries remain, want 2 (the exhausted one discarded)", got)
	}
	clock.Add(2 * 3600) // the rest expire
	s.Trigger("manual", true)
	if sum := waitPass(t, p); sum.Discarded != 2 || sum.Remaining != 0 {
		t.Errorf("pass = %+v; want 2 discarded, none remaining", sum)
	}
	reasons := map[string]int{}
	for _, e := range logs.FilterMessage("Discarded pending upload").All() {
		reasons[e.ContextMap()["reason"].(string)]++
	}
	if reasons[pending.ReasonMaxAttempts] != 1 || reasons[pending.ReasonExpired] != 2 {
		t.Errorf("discard reasons = %v; want 1 max_attempts, 2 expired", reasons)
	}
}

func TestStopCancelsARunningPass(t *testing.T) {
	st := mustStore(t, 3, pending.Options{})
	p := newPasses()
	d := &fakeDeliverer{store: st, gate: make(chan struct{})} // blocks until cancelled
	d.session.Store(true)
	s := New(Options{Store: st, Deliverer: d, OnPass: p.add})
	s.Start(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for calls, _ := d.stats(); calls == 0; calls, _ = d.stats() {
		if time.Now().After(deadline) {
			t.Fatal("the start-up pass never delivered")
		}
		time.Sleep(time.Millisecond)
	}
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
	d := &fakeDeliverer{store: st, gate: gate}
	s := startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, HasSession: d.session.Load,
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
	// Wait until three deliveries are in the gate at once, then let the pass finish.
	deadline := time.Now().Add(10 * time.Second)
	for _, m := d.stats(); m < 3; _, m = d.stats() {
		if time.Now().After(deadline) {
			t.Fatalf("never 3 deliveries at once with concurrency 3 (max %d)", m)
		}
		time.Sleep(time.Millisecond)
	}
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
	startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, HasSession: session.Load,
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
	st := mustStore(t, 1, pending.Options{MaxAttempts: 3})
	p := newPasses()
	d := &fakeDeliverer{store: st}
	d.session.Store(true)
	d.fail.Store(true)
	s := startService(t, Options{Store: st, Deliverer: d, OnPass: p.add, Settings: Settings{Interval: time.Hour}})
	s.Trigger("session", false) // the entry is due: this pass counts its failure
	waitFor := func() []pending.Entry {
		list := st.List()
		if len(list) != 1 {
			t.Fatalf("%d entries, want 1", len(list))
		}
		return list
	}
	deadline := time.Now().Add(20 * time.Second)
	for waitFor()[0].AttemptCount == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // poll: the first (due) pass records its attempt
	}
	if got := waitFor()[0].AttemptCount; got != 1 {
		t.Fatalf("attempt_count after the first pass = %d, want 1", got)
	}
	for range 5 {
		_, seq := s.Trigger("manual", true)
		for sum := waitPass(t, p); sum.Seq < seq; sum = waitPass(t, p) {
		}
	}
	if calls, _ := d.stats(); calls < 6 {
		t.Errorf("%d deliveries, want the forced passes to have tried (at least 6)", calls)
	}
	if got := waitFor()[0].AttemptCount; got != 1 {
		t.Errorf("attempt_count after 5 forced passes before the entry was due = %d, want 1", got)
	}
}
