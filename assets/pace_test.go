package assets

import (
	"context"
	"errors"
	"testing"
	"time"
)

// While captures keep starting, uploads start at most one per interval; once they stop for the
// quiet time, uploads start at once; and a cancelled wait returns.
func TestPacerSpacesUploadsWhileBusy(t *testing.T) {
	pc := &pacer{quiet: 300 * time.Millisecond, every: 40 * time.Millisecond, last: new(activity)}
	ctx := context.Background()

	// Idle: no wait at all, however many uploads.
	start := time.Now()
	for range 20 {
		if err := pc.wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d >= pc.every {
		t.Errorf("20 uploads with no traffic took %v, want no pacing", d)
	}

	// Busy: 5 uploads take at least 4 intervals.
	pc.last.busy()
	stop := keepBusy(pc.last, 10*time.Millisecond)
	defer stop()
	start = time.Now()
	for range 5 {
		if err := pc.wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 4*pc.every {
		t.Errorf("5 uploads while busy took %v, want at least %v", d, 4*pc.every)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	pc.mu.Lock()
	pc.next = time.Now().Add(time.Hour)
	pc.mu.Unlock()
	if err := pc.wait(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with a cancelled context = %v", err)
	}
}

// Traffic going quiet releases a waiting upload before its slot.
func TestPacerReleasesWhenTrafficStops(t *testing.T) {
	pc := &pacer{quiet: 50 * time.Millisecond, every: time.Hour, last: new(activity)}
	pc.last.busy()
	if err := pc.wait(context.Background()); err != nil { // takes the first slot
		t.Fatal(err)
	}
	pc.last.busy()
	done := make(chan error, 1)
	go func() { done <- pc.wait(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an upload waited for its hourly slot after the traffic stopped")
	}
	if idle := time.Since(time.Unix(0, pc.last.Load())); idle < pc.quiet {
		t.Errorf("released after %v of quiet, want at least %v", idle, pc.quiet)
	}
}

// keepBusy marks a capture starting every interval, as a game's traffic would, until stop is
// called; stop returns once it has stopped.
func keepBusy(a *activity, every time.Duration) (stop func()) {
	quit, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				a.busy()
			}
		}
	}()
	return func() { close(quit); <-stopped }
}
