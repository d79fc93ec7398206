package assets

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Uploads yield to the game. While captures stream in (a game load is a burst of hundreds of
// assets), uploads start at most one per busyUploadEvery, so that their CPU does not slow the
// responses the player is waiting for; once no capture has started for quietAfter, they go at
// full speed. Nothing waits long: the game's traffic comes in bursts with quiet gaps. The one
// upload a second keeps an endless stream of captures from starving the archive.
const (
	quietAfter      = 250 * time.Millisecond
	busyUploadEvery = time.Second
)

// pacer spaces work out while the proxy is busy with captures.
type pacer struct {
	quiet, every time.Duration
	last         *activity

	mu   sync.Mutex
	next time.Time // guarded by mu: when the next upload may start while busy
}

// activity is the Unix ns of the last capture start; 0 for none yet.
type activity struct{ atomic.Int64 }

// busy records a capture starting now.
func (a *activity) busy() { a.Store(time.Now().UnixNano()) }

func newPacer(a *activity, every time.Duration) *pacer {
	return &pacer{quiet: quietAfter, every: every, last: a}
}

// wait returns when an upload may start, or ctx's error.
func (pc *pacer) wait(ctx context.Context) error {
	for {
		now := time.Now()
		idle := now.Sub(time.Unix(0, pc.last.Load()))
		if idle >= pc.quiet {
			return nil
		}
		pc.mu.Lock()
		if !now.Before(pc.next) {
			pc.next = now.Add(pc.every)
			pc.mu.Unlock()
			return nil
		}
		d := min(pc.next.Sub(now), pc.quiet-idle) // a slot, or the traffic going quiet
		pc.mu.Unlock()
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
