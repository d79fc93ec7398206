package faulttest

import (
	"testing"
	"time"
)

// TestShutdownDuringStallKeepsEverything stops the app while its uploads hang on a stalled API
// (every answer vanishes), then starts it again on the same data directory once the network is
// back. Shutdown must cancel the hanging uploads promptly and keep every entry, without counting
// the cancelled tries as attempts (DECISIONS: "A transient failure cancelled by shutdown does not
// count an attempt"); the restarted app must deliver everything exactly once.
func TestShutdownDuringStallKeepsEverything(t *testing.T) {
	sz := runSize()
	seed := uint64(100)
	r := newRig(t, 0)
	batch := makeAssets(seed, sz.load)

	r.addToxics([]toxic{{Name: "answers-vanish", Type: "timeout", Stream: "downstream", Attrs: map[string]any{"timeout": 0}}})
	r.capture(seed, batch)
	r.retry.Trigger("during the stall", true)
	// Both live workers and the pass's two deliveries wait on answers that never come; let a
	// delivery give up on its own first (its no-progress timeout, on each of its tries), so
	// that the store holds counted attempts as well as cancelled ones.
	waitFor(t, sz.bite, "every capture committed", func() bool { return r.stats().Committed == int64(len(batch)) })
	waitFor(t, sz.bite, "a delivery failing on the stall", func() bool { return r.stats().Failed > 0 })
	hanging := r.api.TotalRequests()
	waitFor(t, sz.bite, "uploads hanging on the stall", func() bool { return r.api.TotalRequests() >= hanging+2 })

	stopped := time.Now()
	r.stop()
	t.Logf("app stopped in %s", time.Since(stopped).Round(time.Millisecond))
	st := r.stats()
	if r.api.Uploads() != 0 {
		t.Fatalf("%d uploads stored though every handshake answer vanished", r.api.Uploads())
	}

	// Everything is still pending on disk, and only the tries that failed on their own (a
	// no-progress timeout before the shutdown) counted an attempt.
	r.start()
	left := r.store.List()
	if len(left) != len(batch) {
		t.Fatalf("%d entries pending after the restart, want %d", len(left), len(batch))
	}
	attempts := 0
	for _, e := range left {
		attempts += e.AttemptCount
	}
	if int64(attempts) != st.Failed {
		t.Errorf("entries record %d attempts, but the pipeline saw %d transient failures: a try cancelled by the shutdown was counted, or a failure was not",
			attempts, st.Failed)
	}

	r.removeToxics()
	r.drain(len(batch), sz.drain)
	r.verify(batch)
	t.Logf("%d transient failures before the shutdown, %d after the restart; %d retry passes; %d requests",
		st.Failed, r.stats().Failed-st.Failed, r.passes, r.api.TotalRequests())
}
