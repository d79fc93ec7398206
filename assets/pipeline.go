package assets

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/pending"
	"github.com/fusou-proxy/fusou-proxy/retry"
)

// ShutdownGrace bounds how long Close waits for the queued captures to be committed and the
// cancelled uploads to return.
const ShutdownGrace = 10 * time.Second

// Settings are the pipeline's tunables that may change while it runs (a config file edit).
type Settings struct {
	// Enable turns capturing on (asset_sync.enable): off, Start declines every response.
	Enable bool
	// Extensions lists the lower-case extensions, without a dot, of the paths that are
	// captured (asset_extensions); the server refuses any other with 415.
	Extensions []string
}

// PipelineOptions configures a Pipeline.
type PipelineOptions struct {
	Store    *pending.Store
	Uploader *Uploader
	// Index is the server's known (key, hash) pairs; nil means an index in memory, empty at
	// start, that learns from this process's uploads.
	Index   *Index
	Session *SessionHolder
	// Endpoint is asset_upload_endpoint, recorded as each entry's target_url.
	Endpoint string
	// Workers is the number of live uploads at once (asset_sync.workers); at least 1.
	Workers int
	// QueueSize bounds the committed entries waiting for a worker (asset_sync.queue_size); at
	// least 1. Beyond it they wait in the store for a retry pass.
	QueueSize int
	// MaxAssetBytes bounds a decoded body (proxy.capture.max_asset_bytes); at least 1.
	MaxAssetBytes int64
	Settings      Settings
	Logger        *zap.Logger
}

// Pipeline takes finished captures from the proxy, commits each to the pending store (the
// outbox) and uploads it. Deliver is the one path from a pending entry to the server, shared
// with the retry service.
type Pipeline struct {
	o        PipelineOptions
	log      *zap.Logger
	store    *pending.Store
	index    *Index
	settings atomic.Pointer[Settings]
	stats    counters

	commits     chan *capture // finished captures waiting for the committer
	queued      atomic.Int64  // captures queued or being written: Stats.Queued
	queuedBytes atomic.Int64  // the memory their bodies hold
	overflow    atomic.Bool   // committed entries did not fit in uploads; the store has them
	uploads     chan string   // ids of committed entries waiting for a worker
	printSeed   maphash.Seed  // seeds bodyPrint sums; made at random for each process
	prints      printCache    // what recently committed bodies are, by their print
	captures    activity      // how fast captures start: busy or quiet
	pace        *pacer        // holds uploads back while captures stream in
	lastShedLog atomic.Int64  // Unix ns of the last "capture shed" line
	origin      string        // the Origin header recorded with each entry: o.Endpoint's, if it parses

	closed atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewPipeline makes a Pipeline; Run starts it.
func NewPipeline(o PipelineOptions) (*Pipeline, error) {
	if o.Store == nil || o.Uploader == nil || o.Session == nil {
		return nil, errors.New("new pipeline: store, uploader and session are required")
	}
	if o.Workers < 1 || o.QueueSize < 1 || o.MaxAssetBytes < 1 {
		return nil, fmt.Errorf("new pipeline: workers (%d), queue size (%d) and max asset bytes (%d) must be positive",
			o.Workers, o.QueueSize, o.MaxAssetBytes)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Index == nil {
		ix, err := OpenIndex(IndexOptions{Logger: o.Logger})
		if err != nil {
			return nil, fmt.Errorf("new pipeline: %w", err)
		}
		o.Index = ix
	}
	p := &Pipeline{
		o: o, log: o.Logger, store: o.Store, index: o.Index,
		commits:   make(chan *capture, maxQueued),
		uploads:   make(chan string, o.QueueSize),
		printSeed: maphash.MakeSeed(),
	}
	if u, err := parseEndpoint(o.Endpoint); err == nil {
		p.origin = origin(u)
	}
	p.pace = newPacer(&p.captures, busyUploadEvery)
	p.SetSettings(o.Settings)
	return p, nil
}

// SetSettings applies new settings to the captures that start from now on.
func (p *Pipeline) SetSettings(s Settings) {
	s.Extensions = append([]string(nil), s.Extensions...)
	p.settings.Store(&s)
}

// Run starts the committer and the upload workers; Close stops them.
func (p *Pipeline) Run(ctx context.Context) {
	ctx, p.cancel = context.WithCancel(ctx)
	p.wg.Add(1 + p.o.Workers)
	go p.committer(ctx)
	for range p.o.Workers {
		go p.worker(ctx)
	}
}

// Close stops taking captures, commits the ones already finished, cancels the uploads in
// flight (their entries stay pending) and waits up to ShutdownGrace for all of it.
func (p *Pipeline) Close() error {
	p.closed.Store(true)
	if p.cancel == nil { // never run: release what waits in the queue
		for len(p.commits) > 0 {
			(<-p.commits).release()
			p.queued.Add(-1)
		}
		return nil
	}
	p.cancel()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		// A capture that raced the committer's last look at the queue.
		for len(p.commits) > 0 {
			c := <-p.commits
			p.queued.Add(-1)
			p.shed(c, "shutting down")
		}
		return nil
	case <-time.After(ShutdownGrace):
		return fmt.Errorf("close pipeline: still busy after %s", ShutdownGrace)
	}
}

// worker uploads the entries the committer queues, logging why one stays pending. When more
// were committed than the queue held, a worker that empties it after a success queues the
// rest from the store.
func (p *Pipeline) worker(ctx context.Context) {
	defer p.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-p.uploads:
			e, err := p.store.Get(id)
			if err != nil {
				continue // settled meanwhile, by a retry pass
			}
			d := p.Deliver(ctx, e, true)
			if (d.Class == Auth || d.Class == Transient) && !d.Cancelled {
				// DEBUG: a session-less game start would otherwise log a line per asset; the
				// app's minute summary counts them.
				p.log.Debug("Saved pending upload due to "+d.Reason,
					zap.String("id", e.ID), zap.String("key", e.Context.Key), zap.Stringer("class", d.Class))
			}
			if d.Class == Success && !d.Held && len(p.uploads) == 0 && p.overflow.Swap(false) {
				p.refill()
			}
		}
	}
}

// refill queues the entries never tried yet, oldest first, as many as the queue takes.
func (p *Pipeline) refill() {
	for _, e := range p.store.List() {
		if e.AttemptCount == 0 {
			p.queueUpload(e.ID)
		}
	}
}

// Delivery is the outcome of Deliver.
type Delivery struct {
	Class Class
	// Reason is a short description for logs and last_error; never a secret.
	Reason string
	// Held: another upload holds the entry; nothing was done.
	Held bool
	// Dropped: the entry could not be read (gone, or corrupt and moved to corrupt/).
	Dropped bool
	// Cancelled: ctx ended during the upload; the entry was left as it was.
	Cancelled bool
}

// Outcome is d as the retry service counts it.
func (d Delivery) Outcome() retry.Outcome {
	switch {
	case d.Held, d.Cancelled:
		return retry.Busy
	case d.Dropped:
		return retry.Dropped
	}
	switch d.Class {
	case Success:
		return retry.Delivered
	case Auth:
		return retry.Unauthorized
	case Transient:
		return retry.Failed
	}
	return retry.Rejected
}

// Deliver uploads a pending entry and settles it: success deletes it, a transient failure
// records the attempt (and a Retry-After) when count is set, a permanent one moves it to
// rejected/, an authentication failure leaves it untouched. count is false for an entry sent
// before it is due (a forced retry pass). One upload per entry at any time: an entry held by
// another Deliver is left alone.
func (p *Pipeline) Deliver(ctx context.Context, e pending.Entry, count bool) Delivery {
	release, ok := p.store.TryHold(e.ID)
	if !ok {
		return Delivery{Held: true, Reason: "held by another upload"}
	}
	defer release()
	a := assetOf(e)
	if _, ok := p.o.Session.Get(); !ok {
		p.stats.auth.Add(1)
		return Delivery{Class: Auth, Reason: ErrNoSession.Error()}
	}
	if err := p.pace.wait(ctx); err != nil {
		return Delivery{Class: Transient, Reason: "shutting down", Cancelled: true}
	}
	body, err := p.store.Open(e.ID)
	if err != nil {
		return Delivery{Dropped: true, Reason: err.Error()}
	}
	res := p.o.Uploader.UploadTo(ctx, e.TargetURL, a, body)
	// Closed before the entry is deleted or moved: Windows refuses to remove or rename a file
	// that is still open.
	body.Close()
	return p.settle(ctx, e, res, count)
}

// settle records in the store what an upload of e came to, and counts it.
func (p *Pipeline) settle(ctx context.Context, e pending.Entry, res Result, count bool) Delivery {
	d := Delivery{Class: res.Class, Reason: res.Reason}
	var err error
	switch res.Class {
	case Success:
		p.stats.uploaded.Add(1)
		p.index.Add(e.Context.Key, e.Context.ContentHash, e.Context.FileSize)
		err = p.store.Delete(e.ID)
	case Auth:
		p.stats.auth.Add(1)
	case Transient:
		if ctx.Err() != nil { // shutdown: not the server's fault, not an attempt
			d.Cancelled = true
			return d
		}
		p.stats.failed.Add(1)
		if count {
			now := time.Now()
			var notBefore time.Time
			if res.RetryAfter > 0 {
				notBefore = now.Add(res.RetryAfter)
			}
			_, err = p.store.RecordAttempt(e.ID, now, res.Reason, notBefore)
		}
	default: // Permanent
		p.stats.rejected.Add(1)
		reason := res.Reason
		if res.Body != "" {
			reason += ": " + res.Body
		}
		err = p.store.Reject(e.ID, reason)
		p.log.Warn("Upload rejected by the server", zap.String("id", e.ID), zap.String("key", e.Context.Key), zap.String("reason", reason))
	}
	if err != nil {
		p.log.Warn("could not record the upload's outcome", zap.String("id", e.ID), zap.Stringer("class", res.Class), zap.Error(err))
	}
	return d
}

// Stats are the pipeline's counters since start.
type Stats struct {
	Captured  int64 `json:"captured"`      // complete captures handed over by the proxy
	Shed      int64 `json:"shed"`          // captures dropped: queue full, or a write or commit failed
	Skipped   int64 `json:"skipped"`       // responses declined by the asset rules
	Known     int64 `json:"already_known"` // captures the server or the store already had
	Committed int64 `json:"committed"`     // new pending entries
	Uploaded  int64 `json:"uploaded"`      // successful uploads (live and retried)
	Failed    int64 `json:"failed"`        // transient failures
	Rejected  int64 `json:"rejected"`      // permanent failures
	Auth      int64 `json:"auth"`          // uploads held back for want of a valid session
	Queued    int64 `json:"queued"`        // finished captures waiting for their commit
}

// Stats returns the counters.
func (p *Pipeline) Stats() Stats {
	c := &p.stats
	return Stats{c.captured.Load(), c.shed.Load(), c.skipped.Load(), c.known.Load(), c.committed.Load(),
		c.uploaded.Load(), c.failed.Load(), c.rejected.Load(), c.auth.Load(), p.queued.Load()}
}

// contextOf is an asset as the pending store records it.
func contextOf(a Asset) pending.Context {
	return pending.Context{RelativePath: a.RelativePath, Key: a.Key, FileSize: a.Size,
		ContentHash: a.ContentHash, ContentType: a.ContentType, FileName: a.FileName}
}

// assetOf is a pending entry's asset.
func assetOf(e pending.Entry) Asset {
	c := e.Context
	return Asset{Key: c.Key, RelativePath: c.RelativePath, FileName: c.FileName,
		ContentHash: c.ContentHash, ContentType: c.ContentType, Size: c.FileSize}
}

// headersOf are the non-secret headers recorded with an entry (SPEC §6).
func headersOf(a Asset, origin string) map[string]string {
	h := map[string]string{"Content-Type": a.ContentType}
	if origin != "" {
		h["Origin"] = origin
	}
	return h
}
