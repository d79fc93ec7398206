package retry

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// ErrStopped is returned by Wait when the service stops before the awaited pass ends.
var ErrStopped = errors.New("retry service stopped")

// Start begins the service's life: it discards expired entries, runs a pass if a session
// exists, and starts the timer. ctx ends the service like Stop.
func (s *Service) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.ctx, s.cancel = ctx, cancel
	s.ended = make(chan struct{})
	s.mu.Unlock()

	if n := Discard(s.opts.Store, s.opts.Now(), s.currentSettings()); n > 0 {
		s.log.Info("Removed expired pending uploads at start-up", zap.Int("discarded", n))
	}
	if s.opts.HasSession() {
		s.Trigger("startup", false)
	}
	s.wg.Add(1)
	go s.timer(ctx)
}

// Stop cancels a running pass (its entries stay pending) and waits for the service to end.
func (s *Service) Stop() {
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
}

// Trigger asks for a pass. If none runs, one starts now (started is true); otherwise exactly
// one more is queued behind the running one, whatever the number of triggers. force makes the
// pass ignore due times (a manual retry); a queued pass is forced if any of its triggers was.
// seq is the number of the pass that will serve this trigger, for Wait; 0 if the service is
// not running.
func (s *Service) Trigger(reason string, force bool) (started bool, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil || s.ctx.Err() != nil {
		return false, 0
	}
	if s.running {
		s.queued = true
		s.queuedForce = s.queuedForce || force
		s.queuedWhy = reason
		return false, s.seq + 1
	}
	s.running = true
	s.seq++
	s.wg.Add(1)
	go s.loop(s.seq, reason, force)
	return true, s.seq
}

// loop runs the pass seq, then the queued one, if any, until none is queued.
func (s *Service) loop(seq uint64, reason string, force bool) {
	defer s.wg.Done()
	for {
		sum := s.pass(seq, reason, force)
		if s.opts.OnPass != nil {
			s.opts.OnPass(sum)
		}
		s.mu.Lock()
		s.last = sum
		s.recent = append(s.recent, sum)
		if len(s.recent) > recentPasses {
			s.recent = s.recent[1:]
		}
		s.progress = Progress{}
		close(s.ended)
		s.ended = make(chan struct{})
		if !s.queued || s.ctx.Err() != nil {
			s.running = false
			s.queued = false
			s.mu.Unlock()
			return
		}
		s.seq++
		seq, reason, force = s.seq, s.queuedWhy, s.queuedForce
		s.queued, s.queuedForce, s.queuedWhy = false, false, ""
		s.mu.Unlock()
	}
}

// Wait blocks until the pass seq (from Trigger) has ended and returns the latest summary.
func (s *Service) Wait(ctx context.Context, seq uint64) (Summary, error) {
	for {
		s.mu.Lock()
		last, ended, life := s.last, s.ended, s.ctx
		s.mu.Unlock()
		if last.Seq >= seq {
			return last, nil
		}
		if life == nil {
			return Summary{}, ErrStopped
		}
		select {
		case <-ctx.Done():
			return Summary{}, ctx.Err()
		case <-life.Done():
			return Summary{}, ErrStopped
		case <-ended:
		}
	}
}

// recentPasses is how many pass summaries Status keeps, so that `retry --wait` finds the one it
// waited for even when more passes ran since.
const recentPasses = 8

// Status is the service's state for the status endpoint.
type Status struct {
	Running  bool      `json:"running"`
	Queued   bool      `json:"queued"`
	Progress *Progress `json:"progress,omitempty"`
	LastPass *Summary  `json:"last_pass,omitempty"`
	Recent   []Summary `json:"recent_passes,omitempty"` // oldest first
}

// Status reports whether a pass runs, its progress and the last pass's summary.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Running: s.running, Queued: s.queued}
	if s.running {
		p := s.progress
		st.Progress = &p
	}
	if s.last.Seq > 0 {
		l := s.last
		st.LastPass = &l
	}
	st.Recent = slices.Clone(s.recent)
	return st
}

// timer triggers a pass every interval while a session exists and some entry is due.
func (s *Service) timer(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		t.Stop()
		var tick <-chan time.Time // nil, never ready, when the interval is 0: no timer
		if d := s.currentSettings().Interval; d > 0 {
			t.Reset(d)
			tick = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake: // settings changed: restart with the new interval
			continue
		case <-tick:
		}
		if s.opts.HasSession() && s.anyDue() {
			s.Trigger("timer", false)
		}
	}
}

func (s *Service) anyDue() bool {
	now, interval := s.opts.Now(), s.currentSettings().Interval
	for _, e := range s.opts.Store.List() {
		if !DueAt(e, interval).After(now) {
			return true
		}
	}
	return false
}

// pass runs one retry pass and returns its summary.
func (s *Service) pass(seq uint64, reason string, force bool) Summary {
	s.mu.Lock()
	ctx, st := s.ctx, s.settings
	s.mu.Unlock()
	start := s.opts.Now()
	sum := Summary{Seq: seq, Reason: reason, Forced: force, Started: start}
	s.log.Info("Starting upload retry process", zap.Uint64("pass", seq), zap.String("trigger", reason), zap.Bool("forced", force))

	sum.Discarded = Discard(s.opts.Store, start, st)
	var due []pendingEntry
	early := map[string]bool{} // sent by a forced pass before it was due: no attempt counted
	for _, e := range s.opts.Store.List() {
		isDue := !DueAt(e, st.Interval).After(start)
		if force || isDue {
			due = append(due, e)
		}
		if !isDue {
			early[e.ID] = true
		}
	}
	s.setProgress(seq, 0, len(due))

	if len(due) > 0 && !s.opts.HasSession() {
		sum.Stopped = "no session"
	} else {
		s.deliverAll(ctx, seq, due, early, st.Concurrency, &sum)
	}
	if sum.Stopped == "" && ctx.Err() != nil {
		sum.Stopped = "shutdown"
	}
	sum.Remaining = len(s.opts.Store.List())
	sum.Duration = s.opts.Now().Sub(start)
	fields := []zap.Field{
		zap.Uint64("pass", seq), zap.Int("succeeded", sum.Succeeded), zap.Int("failed", sum.Failed),
		zap.Int("rejected", sum.Rejected), zap.Int("discarded", sum.Discarded),
		zap.Int("remaining", sum.Remaining), zap.Duration("duration", sum.Duration),
	}
	if sum.Stopped != "" {
		fields = append(fields, zap.String("stopped", sum.Stopped))
	}
	s.log.Info("Finished upload retry process", fields...)
	return sum
}

// deliverAll sends due through up to concurrency workers, stopping at the first
// authentication failure (the uploads already under way finish).
func (s *Service) deliverAll(ctx context.Context, seq uint64, due []pendingEntry, early map[string]bool, concurrency int, sum *Summary) {
	var mu sync.Mutex // guards sum, done and stop
	done, stop := 0, false
	jobs := make(chan pendingEntry)
	var wg sync.WaitGroup
	for range min(concurrency, len(due)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range jobs {
				mu.Lock()
				halt := stop // set by an auth failure while this job was being handed over
				mu.Unlock()
				if halt {
					continue
				}
				out, why := s.opts.Deliver(ctx, e, !early[e.ID])
				mu.Lock()
				done++
				s.record(e, out, why, sum, &stop)
				s.setProgress(seq, done, len(due))
				mu.Unlock()
			}
		}()
	}
	for _, e := range due {
		mu.Lock()
		halt := stop
		mu.Unlock()
		if halt || ctx.Err() != nil {
			break
		}
		select {
		case jobs <- e:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
}

// record counts one delivery and logs it. The caller holds the pass's lock.
func (s *Service) record(e pendingEntry, out Outcome, why string, sum *Summary, stop *bool) {
	fields := []zap.Field{zap.String("id", e.ID), zap.String("key", e.Context.Key), zap.Int("attempt", e.AttemptCount+1)}
	switch out {
	case Delivered:
		sum.Succeeded++
		s.log.Info("Successfully retried upload "+e.ID, fields...)
	case Failed:
		sum.Failed++
		s.log.Warn("Retry attempt failed", append(fields, zap.String("reason", why))...)
	case Rejected:
		sum.Rejected++
		s.log.Warn("Retry attempt failed", append(fields, zap.String("reason", why), zap.String("outcome", "rejected"))...)
	case Unauthorized:
		if !*stop {
			*stop = true
			sum.Stopped = "auth"
			s.log.Warn("Retry attempt failed", append(fields, zap.String("reason", why), zap.String("outcome", "auth, pass stopped"))...)
		}
	case Dropped:
		s.log.Warn("Retry attempt failed", append(fields, zap.String("reason", why), zap.String("outcome", "dropped"))...)
	case Busy:
	}
}

func (s *Service) setProgress(seq uint64, done, total int) {
	s.mu.Lock()
	s.progress = Progress{Seq: seq, Done: done, Total: total}
	s.mu.Unlock()
}
