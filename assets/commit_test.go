package assets

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/pending"
)

// runUntilDone fails the test if fn blocks for long.
func runUntilDone(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { fn(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal(what + " blocked")
	}
}

// With no committer running the commit queue fills: past maxBusyQueued captures while they
// stream in fast (a flood), or maxQueued while they come slowly, Finish sheds the new ones
// (counted, logged once for the burst) and returns at once. Close on a pipeline never run
// releases the queue: the drafts of the queued captures are removed.
func TestCommitQueueFullShedsWithoutBlocking(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slow  bool
		limit int
	}{{"burst", false, maxBusyQueued}, {"slow", true, maxQueued}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{noRun: true})
			const big = 3 // the first few go to drafts on disk
			runUntilDone(t, "captures on a full commit queue", func() {
				for i := range tc.limit + 10 {
					body := png(i)
					if i < big {
						body = bigPNG(i)
					}
					if tc.slow { // as if each capture came long after the one before
						f.p.captures.window.Store(0)
						f.p.captures.last.Store(0)
					}
					if !f.capture(fmt.Sprintf("/kcs2/img/q/%d.png", i), body, "") {
						t.Errorf("capture %d declined", i)
					}
				}
			})
			if s := f.p.Stats(); s.Shed != 10 || s.Queued != int64(tc.limit) || s.Captured != int64(tc.limit)+10 {
				t.Errorf("stats = %+v, want %d captured, %d queued, 10 shed", s, tc.limit+10, tc.limit)
			}
			// One line for the burst (rate-limited), not ten.
			if n := f.logs.FilterMessage("capture shed: commit queue full").Len(); n < 1 || n >= 10 {
				t.Errorf("%d shed log lines for 10 sheds in a burst, want 1 (at most one a second)", n)
			}
			if n := len(f.storeFiles(t)); n != big {
				t.Errorf("%d files in the store folder, want the %d queued drafts", n, big)
			}
			if err := f.p.Close(); err != nil {
				t.Fatal(err)
			}
			if s := f.p.Stats(); s.Queued != 0 {
				t.Errorf("%d captures still queued after Close", s.Queued)
			}
			if files := f.storeFiles(t); len(files) != 0 {
				t.Errorf("files left in the store folder after Close: %q", files)
			}
		})
	}
}

// The queue also bounds the memory of the bodies waiting in it: maxQueuedBytes of buffers, then
// the next captures are shed.
func TestCommitQueueMemoryShedsWithoutBlocking(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true})
	body := randomBytes(11, maxMemoryBody) // a full buffer each
	fit := maxQueuedBytes / maxMemoryBody
	runUntilDone(t, "captures over the queue's memory", func() {
		for i := range fit + 10 {
			c := f.p.Start(request(fmt.Sprintf("/kcs2/img/m/%d.png", i)),
				&http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: maxMemoryBody})
			for off := 0; off < len(body); off += 64 << 10 {
				c.Write(body[off : off+64<<10])
			}
			c.Finish(true)
		}
	})
	if s := f.p.Stats(); s.Shed != 10 || s.Queued != int64(fit) {
		t.Errorf("stats = %+v, want %d queued, 10 shed", s, fit)
	}
	if got := f.p.queuedBytes.Load(); got != int64(fit)*maxMemoryBody {
		t.Errorf("queued bytes = %d, want %d", got, int64(fit)*maxMemoryBody)
	}
	if n := f.logs.FilterMessage("capture shed: commit queue full").Len(); n < 1 || n >= 10 {
		t.Errorf("%d shed log lines for 10 sheds in a burst, want 1", n)
	}
}

// Captures queued while the committer works are committed together, in one batch: taken from
// the queue all at once, then written (no capture is committed while another waits in the
// queue). While captures stream in, the batch stays unsynced and unlisted, so nothing is
// uploaded; once the traffic goes quiet it is synced and every entry uploaded.
func TestQueuedCapturesAreCommittedInOneBatch(t *testing.T) {
	const n = 50
	f := newFixture(t, fixtureOpts{noRun: true})
	for i := range n {
		body := png(i)
		if i%10 == 0 {
			body = bigPNG(i)
		}
		f.capture(fmt.Sprintf("/kcs2/img/batch/%d.png", i), body, "")
	}
	if s := f.p.Stats(); s.Queued != n {
		t.Fatalf("stats = %+v, want %d queued", s, n)
	}
	var once sync.Once
	busy := keepBusy(&f.p.captures, 10*time.Millisecond) // the game is loading
	stop := func() { once.Do(busy) }
	t.Cleanup(stop)
	f.p.Run(context.Background())
	deadline := time.Now().Add(60 * time.Second)
	for {
		// Committed first: once it is above 0 the batch was taken whole, so none waits in
		// the queue (Stats.Queued also counts the batch being written).
		c, q := f.p.Stats().Committed, len(f.p.commits)
		if c > 0 && q > 0 {
			t.Fatalf("%d committed while %d still queued: not one batch", c, q)
		}
		if c == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %d of %d committed", c, n)
		}
		runtime.Gosched()
	}
	// List before Unsynced: if the batch is still unsynced after the List, no Sync had begun
	// before it, so nothing could be listed or uploaded.
	reqs, listed := f.srv.TotalRequests(), len(f.store.List())
	if u := f.store.Unsynced(); u == n && (reqs != 0 || listed != 0) {
		t.Errorf("%d requests and %d entries listed before the batch was synced", reqs, listed)
	} else if u != n && u != 0 {
		t.Errorf("%d entries unsynced, want the whole batch of %d or none", u, n)
	}
	if got := len(f.storeFiles(t)); got != 2*n {
		t.Errorf("%d files in the store folder, want %d (a .bin and a .json each)", got, 2*n)
	}
	stop() // the load is over: the batch is synced and uploaded
	eventually(t, "every upload", func() bool { return f.srv.Uploads() == n && f.store.Stats().Count == 0 })
	if s := f.p.Stats(); s.Committed != n || s.Uploaded != n || s.Shed != 0 || s.Known != 0 {
		t.Errorf("stats = %+v, want %d committed and uploaded", s, n)
	}
	f.noStrayFiles(t)
}

// Close commits every capture still queued, and makes it durable, before it returns: none is
// lost, even when the pipeline closes right after a burst.
func TestCloseCommitsEverythingQueued(t *testing.T) {
	const n = 50
	f := newFixture(t, fixtureOpts{})
	bodies := make([][]byte, n)
	for i := range n {
		bodies[i] = png(i)
		if i%10 == 0 {
			bodies[i] = bigPNG(i)
		}
		f.capture(fmt.Sprintf("/kcs2/img/close/%d.png", i), bodies[i], "")
	}
	if err := f.p.Close(); err != nil {
		t.Fatal(err)
	}
	if s := f.p.Stats(); s.Committed != n || s.Shed != 0 || s.Queued != 0 {
		t.Errorf("stats after Close = %+v, want all %d committed, none shed or queued", s, n)
	}
	if u := f.store.Unsynced(); u != 0 {
		t.Errorf("%d entries not synced after Close", u)
	}
	f.noStrayFiles(t)
	// Reopened, the store has every capture the server does not.
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := pending.Open(pending.Options{Dir: filepath.Join(f.dir, "pending_uploads")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i, body := range bodies {
		key := fmt.Sprintf("assets/kcs2/img/close/%d.png", i)
		if !st.Has(key, sum(body)) && f.srv.UploadCount(key, sum(body)) != 1 {
			t.Errorf("%s is neither pending nor uploaded", key)
		}
	}
	for _, e := range st.List() {
		r, err := st.Open(e.ID)
		if err != nil {
			t.Errorf("entry %s unreadable: %v", e.Context.Key, err)
			continue
		}
		var b bytes.Buffer
		b.ReadFrom(r)
		r.Close()
		if sum(b.Bytes()) != e.Context.ContentHash {
			t.Errorf("entry %s holds other bytes", e.Context.Key)
		}
	}
}

// While captures stream in fast the committer writes at most maxBusyBatch per batch, and holds
// the rest until the next: the game's responses come first.
func TestBusyCommitterWritesAtMostABatch(t *testing.T) {
	n := maxBusyBatch + 88
	f := newFixture(t, fixtureOpts{noRun: true, noSession: true})
	for i := range n {
		f.capture(fmt.Sprintf("/kcs2/img/busy/%d.png", i), png(i), "")
	}
	if s := f.p.Stats(); s.Queued != int64(n) {
		t.Fatalf("stats = %+v, want %d queued", s, n)
	}
	var once sync.Once
	busy := keepBusy(&f.p.captures, 10*time.Millisecond)
	stop := func() { once.Do(busy) }
	t.Cleanup(stop)
	f.p.Run(context.Background())
	sawBatch := false
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, q := f.p.Stats().Committed, f.p.Stats().Queued
		if c > 0 && c < maxBusyBatch && q < int64(n-maxBusyBatch-1) {
			t.Fatalf("%d committed with only %d queued: the first batch took more than %d", c, q, maxBusyBatch)
		}
		if c == maxBusyBatch && q >= int64(n-maxBusyBatch-1) {
			sawBatch = true
		}
		if c == int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %d of %d committed", c, n)
		}
		runtime.Gosched()
	}
	if !sawBatch {
		t.Errorf("never saw %d committed with the other %d queued", maxBusyBatch, n-maxBusyBatch)
	}
	stop()
	eventually(t, "every entry synced", func() bool { return len(f.store.List()) == n })
}

// A game start (600 new assets in a fraction of a second: fewer than three quarters of the busy
// queue) is held for maxHold from the start of the fast run, so that it is written after the
// burst rather than during it.
func TestBusyCommitterHoldsAGameStart(t *testing.T) {
	const n = 600
	f := newFixture(t, fixtureOpts{noRun: true, noSession: true})
	var once sync.Once
	busy := keepBusy(&f.p.captures, 10*time.Millisecond)
	stop := func() { once.Do(busy) }
	t.Cleanup(stop)
	for i := range n {
		f.capture(fmt.Sprintf("/kcs2/img/start/%d.png", i), png(i), "")
	}
	since := time.Unix(0, f.p.captures.busySince())
	if took := time.Since(since); took >= maxHold {
		t.Skipf("queueing %d captures took %v, longer than the %v hold: nothing to tell", n, took, maxHold)
	}
	f.p.Run(context.Background())
	deadline := time.Now().Add(60 * time.Second)
	for f.p.Stats().Committed == 0 {
		if time.Now().After(deadline) {
			t.Fatal("timed out: nothing committed")
		}
		runtime.Gosched()
	}
	if held := time.Since(since); held < maxHold {
		t.Fatalf("the first entries were committed %v into the fast run; want none before %v", held, maxHold)
	}
	stop()
	eventually(t, "every entry synced", func() bool { return len(f.store.List()) == n })
}
