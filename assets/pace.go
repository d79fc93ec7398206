package assets

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Uploads yield to the game. While captures stream in fast (a game load is a burst of
// hundreds of assets), uploads start at most one per busyUploadEvery, so that their CPU does
// not slow the responses the player is waiting for; once the captures have slowed below the
// busy rate for quietAfter, they go at full speed. Nothing waits long: the game's traffic
// comes in bursts with quiet gaps. The one upload a second keeps an endless fast stream of
// captures from starving the archive, and a steady trickle below the busy rate (a player
// browsing) never holds uploads back, so it cannot build a backlog.
const (
	quietAfter      = 250 * time.Millisecond
	busyUploadEvery = time.Second
	// The proxy is busy while at least busyCount captures start within one busyWindow: 100 a
	// second, where a game's loading burst is and a steady trickle of captures is not.
	busyWindow = 100 * time.Millisecond
	busyCount  = 10
)

// pacer spaces work out while the proxy is busy with captures.
type pacer struct {
	quiet, every time.Duration
	last         *activity

	mu   sync.Mutex
	next time.Time // guarded by mu: when the next upload may start while busy
}

// activity tells whether captures are starting at the busy rate or faster.
type activity struct {
	window atomic.Int64 // the current busyWindow's number<<8 | the captures started in it (capped at busyCount)
	last   atomic.Int64 // Unix ns of the last capture start at the busy rate; 0 for none yet
	since  atomic.Int64 // Unix ns of the first capture start of the current busy run
}

// busy records a capture starting now.
func (a *activity) busy() { a.busyAt(time.Now().UnixNano()) }

// busyAt records a capture starting at now, in Unix ns.
func (a *activity) busyAt(now int64) {
	w := now / int64(busyWindow)
	for {
		cur := a.window.Load()
		n := cur & 0xff
		if cur>>8 != w {
			n = 0
		}
		if n >= busyCount {
			a.markBusy(now)
			return
		}
		if a.window.CompareAndSwap(cur, w<<8|(n+1)) {
			if n+1 >= busyCount {
				a.markBusy(now)
			}
			return
		}
	}
}

// markBusy records a capture start at the busy rate at now, the start of a busy run when the
// last one was quietAfter ago or more.
func (a *activity) markBusy(now int64) {
	if prev := a.last.Swap(now); now-prev >= int64(quietAfter) {
		a.since.Store(now)
	}
}

// busySince returns the Unix ns when the current busy run began.
func (a *activity) busySince() int64 { return a.since.Load() }

// lastBusy returns the Unix ns of the last capture start at the busy rate, 0 for none.
func (a *activity) lastBusy() int64 { return a.last.Load() }

func newPacer(a *activity, every time.Duration) *pacer {
	return &pacer{quiet: quietAfter, every: every, last: a}
}

// wait returns when an upload may start, or ctx's error.
func (pc *pacer) wait(ctx context.Context) error {
	for {
		now := time.Now()
		idle := now.Sub(time.Unix(0, pc.last.lastBusy()))
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
