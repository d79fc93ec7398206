package assets

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
)

// Captures still in the journal when the process dies are committed and uploaded by the next
// run, each once. A path's first capture is not printed on the client's path, so its first
// repeat is journaled too (and dropped at commit); later repeats of a waiting capture are not.
func TestJournalReplayedAfterRestart(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true}) // no drainer: everything stays in the journal
	const n = 30
	for i := range n {
		f.capture(fmt.Sprintf("/kcs2/img/j/%d.png", i), png(i), "")
	}
	for range 3 { // the same body for the same path, still waiting
		f.capture("/kcs2/img/j/0.png", png(0), "")
	}
	if s := f.p.Stats(); s.Captured != n+3 || s.Known != 2 || f.p.Backlog() != n+1 {
		t.Fatalf("stats %+v, backlog %d; want %d waiting and the last two repeats known", s, f.p.Backlog(), n+1)
	}
	if got := mustGlob(t, filepath.Join(f.dir, "spool", "journal-*.log")); len(got) != 1 {
		t.Fatalf("journal segments = %v", got)
	}
	if c := f.store.Stats().Count; c != 0 {
		t.Fatalf("%d entries committed with no drainer running", c)
	}
	// The writer has written them (10 to 20 ms after each capture); then the process
	// dies: no Close. A new pipeline on the same folders takes over.
	f.p.backlogMu.Lock()
	waiting := backlogItems(&f.p.backlog)
	f.p.backlogMu.Unlock()
	for _, c := range waiting {
		if err := c.rec.Flushed(); err != nil {
			t.Fatal(err)
		}
	}
	p2, err := NewPipeline(f.p.o)
	if err != nil {
		t.Fatal(err)
	}
	if p2.Backlog() != n+1 {
		t.Fatalf("replayed backlog = %d, want %d", p2.Backlog(), n+1)
	}
	if f.logs.FilterMessage("Recovered captures from the spool").Len() != 1 {
		t.Error("no 'Recovered captures from the spool' line")
	}
	p2.Run(context.Background())
	t.Cleanup(func() { p2.Close() })
	eventually(t, "the replayed captures uploaded", func() bool { return f.srv.Uploads() == n })
	for i := range n {
		if got := f.srv.UploadCount(fmt.Sprintf("assets/kcs2/img/j/%d.png", i), sum(png(i))); got != 1 {
			t.Errorf("asset %d uploaded %d times", i, got)
		}
	}
	eventually(t, "the journal emptied", func() bool {
		return p2.journal.LiveBytes() == 0 && f.store.Stats().Count == 0
	})
}

// While captures stream in, the journal's commits are paced; once the traffic stops, the rest
// are committed at full speed; Close commits what is left.
func TestJournalCommitsWaitForQuiet(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	stop := keepBusy(&f.p.captures, 5*time.Millisecond) // the game's traffic
	const n = 200
	start := time.Now()
	for i := range n {
		f.capture(fmt.Sprintf("/kcs2/img/b/%d.png", i), png(i), "")
	}
	time.Sleep(200 * time.Millisecond) // a window to count commits in, not a synchronisation
	elapsed := time.Since(start)
	committed := f.p.Stats().Committed
	if limit := int64(elapsed/busyCommitEvery) + drainers + 1; committed > limit {
		t.Errorf("%d commits in %v of traffic, want at most %d (one per %v)", committed, elapsed, limit, busyCommitEvery)
	}
	stop()
	eventually(t, "the backlog committed after the traffic stopped", func() bool {
		s := f.p.Stats()
		return s.Committed == n && f.p.Backlog() == 0
	})
	eventually(t, "the captures uploaded", func() bool { return f.srv.Uploads() == n })
}

// A steady trickle of captures below the busy rate (a player browsing) is never held back:
// everything is committed and uploaded while the trickle goes on, where one a second would
// take n seconds.
func TestTrickleIsNotPaced(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	// 2 marks and 4 captures per busyWindow; a ticker late under load delivers at most one
	// extra tick each, so a window never sees busyCount.
	stop := keepMarking(50*time.Millisecond, f.p.captures.busy)
	defer stop()
	const n = 20
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		f.capture(fmt.Sprintf("/kcs2/img/t/%d.png", i), png(i), "")
	}
	deadline := time.Now().Add(n * busyCommitEvery / 2)
	for f.p.Stats().Committed < n || f.srv.Uploads() < n {
		if time.Now().After(deadline) {
			t.Fatalf("during a trickle: %d of %d committed, %d uploaded after %v", f.p.Stats().Committed, n, f.srv.Uploads(), n*busyCommitEvery/2)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if last := f.p.captures.lastBusy(); last != 0 {
		t.Errorf("the trickle made the proxy busy (at %v)", time.Unix(0, last))
	}
}

// Close commits what waits in the journal, unpaced, before it returns.
func TestCloseDrainsTheJournal(t *testing.T) {
	f := newFixture(t, fixtureOpts{noSession: true})
	rush(&f.p.captures)
	for i := range 50 {
		f.capture(fmt.Sprintf("/kcs2/img/c/%d.png", i), png(i), "")
	}
	if err := f.p.Close(); err != nil {
		t.Fatal(err)
	}
	if c := f.store.Stats().Count; c != 50 || f.p.Backlog() != 0 {
		t.Errorf("after Close: %d pending, %d in the journal; want 50 and 0", c, f.p.Backlog())
	}
	if got := mustGlob(t, filepath.Join(f.dir, "spool", "journal-*.log")); len(got) != 0 {
		t.Errorf("journal segments left after a full drain: %v", got)
	}
}

// A backlog too large to commit in the shutdown's drain time stays in the journal: Close does
// not wait for it, and the next start commits the rest.
func TestCloseLeavesALargeBacklogInTheJournal(t *testing.T) {
	f := newFixture(t, fixtureOpts{noSession: true, noRun: true})
	const n = 300
	for i := range n {
		f.capture(fmt.Sprintf("/kcs2/img/l/%d.png", i), png(i), "")
	}
	f.p.shutdownDrain = time.Millisecond
	f.p.Run(context.Background())
	rush(&f.p.captures) // traffic: the drainers are paced, so the backlog is still there
	start := time.Now()
	if err := f.p.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	committed := f.store.Stats().Count
	if committed == n || int64(committed) != f.p.Stats().Committed {
		t.Fatalf("%d of %d committed by Close (stats %+v); want some left in the journal", committed, n, f.p.Stats())
	}
	p2, err := NewPipeline(f.p.o)
	if err != nil {
		t.Fatal(err)
	}
	if got := p2.Backlog(); got+committed < n {
		t.Fatalf("replayed %d, committed %d: %d captures lost", got, committed, n-got-committed)
	}
	p2.Run(context.Background())
	t.Cleanup(func() { p2.Close() })
	eventually(t, "every capture committed once", func() bool { return f.store.Stats().Count == n && p2.Backlog() == 0 })
}

// The spool meta's direct encoding is byte for byte json.Marshal's, and what needs escaping
// goes through json.Marshal.
func TestEncodeSpoolMetaIsJSONMarshal(t *testing.T) {
	paths := []string{"/kcs2/img/common/common_main.png", "/kcs2/resources/ship/full/0001_1234.png?version=5", "", "/a b/c~d",
		`/quote"d`, `/back\slash`, "/tab\tpath", "/日本語.png", "/<html>&", "/\x7f", "/bad\xffutf8"}
	for _, path := range paths {
		for _, enc := range []string{"", "gzip", "br"} {
			m := spoolMeta{Path: path, Encoding: enc}
			want, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if got := encodeSpoolMeta(m); !bytes.Equal(got, want) {
				t.Errorf("encodeSpoolMeta(%+v) = %s, want %s", m, got, want)
			}
		}
	}
}

// backlogItems returns what waits in b, oldest first.
func backlogItems(b *backlog) []finished {
	var out []finished
	for blk := b.head; blk != nil; blk = blk.next {
		out = append(out, blk.items[blk.read:blk.write]...)
	}
	return out
}

// The backlog hands captures out in the order they came, across its blocks, whatever the mix
// of pushes and pops, and allocates a block per 512 captures at most, reusing one it emptied.
func TestBacklogIsFIFOAcrossBlocks(t *testing.T) {
	var b backlog
	next, want := 0, 0
	pop := func() {
		t.Helper()
		c, ok := b.pop()
		if !ok || c.size != int64(want) {
			t.Fatalf("pop = %d, %v; want %d", c.size, ok, want)
		}
		want++
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20_000 {
		if rng.IntN(3) > 0 || b.n == 0 { // grows over time, across many blocks
			b.push(finished{size: int64(next)})
			next++
		} else {
			pop()
		}
		if b.n != next-want {
			t.Fatalf("n = %d, want %d", b.n, next-want)
		}
	}
	if got := len(backlogItems(&b)); got != b.n {
		t.Fatalf("%d items in the blocks, n = %d", got, b.n)
	}
	for b.n > 0 {
		pop()
	}
	if _, ok := b.pop(); ok || b.head != nil || b.tail != nil {
		t.Fatal("an empty backlog handed something out or kept blocks in its list")
	}
	allocs := testing.AllocsPerRun(100, func() {
		for i := range 3 * backlogBlockLen {
			b.push(finished{size: int64(i)})
		}
		for range 3 * backlogBlockLen {
			b.pop()
		}
	})
	if allocs > 2 { // three blocks in use: the spare and two new ones
		t.Fatalf("%.1f allocations for a burst of three blocks", allocs)
	}
}
