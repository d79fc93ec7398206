// Package retry owns when pending uploads are tried again (SPEC §7).
//
// A Service runs passes over the pending store: one at a time (single-flight), with exactly one
// more queued for any triggers that arrive while a pass runs, so that a session posted mid-pass
// is never lost. Triggers are a posted session, start-up, a timer and manual requests (forced
// passes, which ignore due times). A pass discards expired and exhausted entries, then delivers
// the due ones oldest first, up to Concurrency at once, through a DeliverFunc — the same upload
// path as live captures. An authentication failure stops the pass: without a valid session
// nothing else would succeed either.
//
// Start with New, then Start; Trigger asks for a pass; Stop cancels a running pass and waits.
package retry

import (
	"context"
	"hash/fnv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/pending"
)

// Outcome is what one delivery of a pending entry came to.
type Outcome int

// Outcomes of a DeliverFunc.
const (
	// Delivered: the server has the asset; the entry was deleted.
	Delivered Outcome = iota
	// Busy: another upload holds the entry (a live upload); it was left alone.
	Busy
	// Unauthorized: no session, or the server refused it (401/403); the entry stays, its
	// attempt not counted, and the pass stops.
	Unauthorized
	// Failed: a transient failure; the attempt was counted on the entry.
	Failed
	// Rejected: the server refused the asset for good; the entry moved to rejected/.
	Rejected
	// Dropped: the entry could not be read (gone, or corrupt and quarantined).
	Dropped
)

var outcomeNames = [...]string{"delivered", "busy", "unauthorized", "failed", "rejected", "dropped"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// DeliverFunc uploads one pending entry and settles it in the store: delete on success, record
// the attempt on a transient failure (only when count is set), move it to rejected/ on a
// permanent one, and leave it as it is on an authentication failure. count is false for an
// entry a forced pass sends before it is due, so that repeated manual retries during an outage
// cannot use up its attempts. It must not block past ctx's cancellation. reason is a short
// description of a failure for the logs; it never contains a secret.
type DeliverFunc func(ctx context.Context, e pending.Entry, count bool) (o Outcome, reason string)

// Store is the part of pending.Store the service needs.
type Store interface {
	// List returns the entries to upload, oldest first.
	List() []pending.Entry
	// Unsupported returns the entries that are not assets, oldest first.
	Unsupported() []pending.Entry
	// Discard removes an entry for good, logging why.
	Discard(id, why string) error
}

var _ Store = (*pending.Store)(nil)

type pendingEntry = pending.Entry

// Settings are the tunables that may change while the service runs (a config file edit).
type Settings struct {
	// Interval is the timer period and the backoff base (interval_seconds). 0 turns the timer
	// off and makes every entry due at once.
	Interval time.Duration
	// Concurrency is how many entries a pass uploads at once (concurrency); at least 1.
	Concurrency int
	// TTL is the age at which an entry is discarded (expired); 0 means never.
	TTL time.Duration
	// MaxAttempts is the attempt count at which an entry is discarded (max_attempts); 0 means
	// never.
	MaxAttempts int
}

// The backoff's shape (SPEC §7); its base is Settings.Interval.
const (
	// MaxBackoff caps the wait between attempts of one entry.
	MaxBackoff = time.Hour
	// Jitter is the spread of a backoff, ±20 %.
	Jitter = 0.2
)

func (s Settings) withDefaults() Settings {
	s.Concurrency = max(s.Concurrency, 1)
	return s
}

// Options configures a Service.
type Options struct {
	Store   Store
	Deliver DeliverFunc
	// HasSession reports whether a session is set; passes are not started by the timer or at
	// start-up without one. nil means always.
	HasSession func() bool
	Settings   Settings
	// OnPass, if set, is called after each pass with its summary (for metrics).
	OnPass func(Summary)
	Logger *zap.Logger
	// Now is the clock, a test seam. nil means time.Now.
	Now func() time.Time
}

// Summary describes one finished pass.
type Summary struct {
	Seq      uint64        `json:"seq"`
	Reason   string        `json:"reason"`
	Forced   bool          `json:"forced"`
	Started  time.Time     `json:"started_at"`
	Duration time.Duration `json:"duration_ns"`
	// Succeeded, Failed, Rejected and Discarded count entries; Remaining is what the store
	// holds afterwards. Stopped says why the pass ended early ("auth", "shutdown"), if it did.
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	Rejected  int    `json:"rejected"`
	Discarded int    `json:"discarded"`
	Remaining int    `json:"remaining"`
	Stopped   string `json:"stopped,omitempty"`
}

// Progress describes the pass running now.
type Progress struct {
	Seq   uint64 `json:"seq"`
	Done  int    `json:"done"`
	Total int    `json:"total"`
}

// Backoff is the wait after an entry's n-th attempt: interval × 2^(n-1), capped at MaxBackoff.
func Backoff(interval time.Duration, attempts int) time.Duration {
	if attempts <= 0 {
		return 0
	}
	d := interval
	for i := 1; i < attempts && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// jitterFactor is a stable number in [1-Jitter, 1+Jitter] for an entry's attempt: stable, so
// that an entry's due time does not move each time the timer looks at it.
func jitterFactor(id string, attempts int) float64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	h.Write([]byte{byte(attempts), byte(attempts >> 8)})
	u := float64(h.Sum64()>>11) / float64(1<<53) // [0, 1)
	return 1 - Jitter + 2*Jitter*u
}

// DueAt is when e may next be tried: its last attempt plus the jittered backoff, and not before
// a server's Retry-After. A never-tried entry is due at once.
func DueAt(e pending.Entry, interval time.Duration) time.Time {
	var due time.Time
	if e.AttemptCount > 0 {
		b := time.Duration(float64(Backoff(interval, e.AttemptCount)) * jitterFactor(e.ID, e.AttemptCount))
		due = e.LastAttempt().Add(b)
	}
	if e.NotBefore.After(due) {
		due = e.NotBefore
	}
	return due
}

// DiscardReason says why an entry is not to be tried again at now (pending.ReasonExpired,
// pending.ReasonMaxAttempts), or "". An entry that is not an asset only expires.
func DiscardReason(e pending.Entry, now time.Time, st Settings) string {
	if st.TTL > 0 && !now.Before(e.Created().Add(st.TTL)) {
		return pending.ReasonExpired
	}
	if st.MaxAttempts > 0 && e.Unsupported == "" && e.AttemptCount >= st.MaxAttempts {
		return pending.ReasonMaxAttempts
	}
	return ""
}

// Discard removes from store every entry DiscardReason gives a reason for at now, and returns
// how many it removed. An entry in use by an upload is left for the next time.
func Discard(store Store, now time.Time, st Settings) int {
	n := 0
	for _, e := range append(store.List(), store.Unsupported()...) {
		if why := DiscardReason(e, now, st); why != "" && store.Discard(e.ID, why) == nil {
			n++
		}
	}
	return n
}

// Service runs retry passes. Its methods are safe for concurrent use.
type Service struct {
	opts Options
	log  *zap.Logger

	mu sync.Mutex // guards the fields below
	// running is true while a pass goroutine runs; queued asks it for one more pass.
	running     bool
	queued      bool
	queuedForce bool
	queuedWhy   string
	seq         uint64 // number of the latest pass started
	last        Summary
	recent      []Summary // the last recentPasses summaries, oldest first
	progress    Progress
	settings    Settings
	ctx         context.Context // the service's lifetime; nil before Start
	ended       chan struct{}   // closed (and replaced) when a pass ends

	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // nudges the timer loop when settings change
}

// New makes a Service; Start begins its timer.
func New(o Options) *Service {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HasSession == nil {
		o.HasSession = func() bool { return true }
	}
	return &Service{opts: o, log: o.Logger, settings: o.Settings.withDefaults(), wake: make(chan struct{}, 1)}
}

// SetSettings changes the interval, concurrency, TTL and attempt limit from the next pass on.
func (s *Service) SetSettings(st Settings) {
	s.mu.Lock()
	s.settings = st.withDefaults()
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Service) currentSettings() Settings {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.settings
}
