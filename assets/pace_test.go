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
	rush(pc.last)
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
	rush(pc.last)
	if err := pc.wait(context.Background()); err != nil { // takes the first slot
		t.Fatal(err)
	}
	rush(pc.last)
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
	if idle := time.Since(time.Unix(0, pc.last.lastBusy())); idle < pc.quiet {
		t.Errorf("released after %v of quiet, want at least %v", idle, pc.quiet)
	}
}

// rush records a burst of captures at the busy rate.
func rush(a *activity) {
	for range busyCount {
		a.busy()
	}
}

// Captures make the proxy busy at busyCount within one busyWindow, not below, and a window
// that has passed counts for nothing.
func TestActivityBusyRate(t *testing.T) {
	a := new(activity)
	w := int64(busyWindow)
	start := 1000 * w
	for i := range busyCount - 1 {
		a.busyAt(start + int64(i))
	}
	if got := a.lastBusy(); got != 0 {
		t.Fatalf("busy after %d captures in a window, want not", busyCount-1)
	}
	a.busyAt(start + w) // the next window: the count starts again
	for i := range busyCount - 2 {
		a.busyAt(start + w + 1 + int64(i))
	}
	if got := a.lastBusy(); got != 0 {
		t.Fatalf("busy after %d captures split over two windows, want not", 2*busyCount-2)
	}
	last := start + w + busyCount
	a.busyAt(last)
	if got := a.lastBusy(); got != last {
		t.Fatalf("lastBusy = %d after the %dth capture in a window, want %d", got, busyCount, last)
	}
	a.busyAt(last + 1) // still busy: each start moves lastBusy
	if got := a.lastBusy(); got != last+1 {
		t.Errorf("lastBusy = %d, want %d", got, last+1)
	}
}

// keepBusy marks a burst of captures every interval, as a game's traffic would, until stop is
// called; stop returns once it has stopped.
func keepBusy(a *activity, every time.Duration) (stop func()) {
	return keepMarking(every, func() { rush(a) })
}

// keepMarking calls mark every interval until stop is called; stop returns once it has stopped.
func keepMarking(every time.Duration, mark func()) (stop func()) {
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
				mark()
			}
		}
	}()
	return func() { close(quit); <-stopped }
}
