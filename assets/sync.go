package assets

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/andybalholm/brotli"
	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/internal/journal"
	"github.com/fusou-proxy/fusou-proxy/pending"
)

// Defaults for PipelineOptions (SPEC §3).
const (
	DefaultWorkers   = 2
	DefaultQueueSize = 256
	// ShutdownGrace bounds how long Close waits for the commit queue to drain and the
	// cancelled uploads to return.
	ShutdownGrace = 10 * time.Second
)

// committers is the number of captures committed at once. A commit is a chain of blocking
// file operations (three fsyncs, two new files, renames); one committer runs one chain at a
// time, while several overlap their waits (the journal shares a flush between concurrent
// fsyncs). With the proxy flooded with new 50 KB assets on the 2-core test machine, four
// committers shed 0 to 3 % of the captures and one shed 68 % (docs/bench/proxy-pipeline.md).
const committers = 4

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
	// Index is the server's known (key, hash) pairs; nil means none are known.
	Index   *Index
	Session *SessionHolder
	// SpoolDir is <data_dir>/spool, on the same filesystem as the store so that a finished
	// capture is adopted by rename. Files left in it by an earlier run are removed.
	SpoolDir string
	// Endpoint is asset_upload_endpoint, recorded as each entry's target_url.
	Endpoint string
	// Workers is the number of live uploads at once; QueueSize bounds both the commit
	// queue and the upload queue. 0 means the defaults.
	Workers, QueueSize int
	// MaxAssetBytes bounds a decoded body; 0 means MaxAssetBytes.
	MaxAssetBytes int64
	// MaxSpoolBytes bounds the spool journal's uncommitted bytes; 0 means DefaultMaxSpoolBytes.
	MaxSpoolBytes int64
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
	spoolDir string
	settings atomic.Pointer[Settings]
	stats    counters

	spares     chan *os.File // empty spool files ready for captures
	commits    chan finished // completed captures waiting for their commit
	uploads    chan string   // ids of committed entries waiting for a worker
	pathSeed   maphash.Seed  // keys the recently captured paths; made at random for each process
	bodySeed   uint64        // seeds bodyPrint sums; made at random for each process
	prints     printCache    // what recently seen bodies are, by their print
	paths      *seenPaths    // the URL paths captured recently
	captures   activity      // how fast captures start: busy or quiet
	pace       *pacer        // holds uploads back while captures stream in
	commitPace *pacer        // holds the journal's commits back likewise

	journal       *journal.Journal // new small captures, until a drainer commits them
	backlogMu     sync.Mutex
	backlog       backlog
	inSpool       map[spoolKey]struct{} // guarded by backlogMu: captures waiting in the journal
	drainDeadline atomic.Int64          // Unix ns: drainers stop committing at shutdown then; 0 until set
	shutdownDrain time.Duration         // shutdownDrain; shorter in tests

	seenMu sync.Mutex
	seen   map[keyHash]struct{} // (key, hash) pairs this process uploaded, when there is no Index

	lastShedLog atomic.Int64 // Unix ns of the last "commit queue full" line
	spoolSeq    atomic.Int64 // numbers the spool files made from the store's spares

	closed atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type keyHash struct{ key, hash string }

// NewPipeline makes a Pipeline; Run starts it.
func NewPipeline(o PipelineOptions) (*Pipeline, error) {
	if o.Store == nil || o.Uploader == nil || o.Session == nil {
		return nil, errors.New("new pipeline: store, uploader and session are required")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.MaxAssetBytes <= 0 {
		o.MaxAssetBytes = MaxAssetBytes
	}
	if o.MaxSpoolBytes <= 0 {
		o.MaxSpoolBytes = DefaultMaxSpoolBytes
	}
	if err := sweepSpool(o.SpoolDir, o.Logger); err != nil {
		return nil, err
	}
	p := &Pipeline{
		o: o, log: o.Logger, store: o.Store, spoolDir: o.SpoolDir,
		spares:        make(chan *os.File, spareSpools),
		commits:       make(chan finished, o.QueueSize),
		uploads:       make(chan string, o.QueueSize),
		pathSeed:      maphash.MakeSeed(),
		bodySeed:      rand.Uint64(),
		paths:         new(seenPaths),
		inSpool:       make(map[spoolKey]struct{}),
		shutdownDrain: shutdownDrain,
		seen:          make(map[keyHash]struct{}),
	}
	p.pace = newPacer(&p.captures, busyUploadEvery)
	p.commitPace = newPacer(&p.captures, busyCommitEvery)
	p.SetSettings(o.Settings)
	if err := p.openJournal(); err != nil {
		return nil, fmt.Errorf("new pipeline: %w", err)
	}
	return p, nil
}

// SetSettings applies new settings to the captures that start from now on.
func (p *Pipeline) SetSettings(s Settings) {
	s.Extensions = append([]string(nil), s.Extensions...)
	p.settings.Store(&s)
}

// Run starts the committers and the upload workers; Close stops them.
func (p *Pipeline) Run(ctx context.Context) {
	ctx, p.cancel = context.WithCancel(ctx)
	p.wg.Add(1 + committers + drainers + p.o.Workers)
	go p.keepSpares(ctx)
	for range committers {
		go p.committer(ctx)
	}
	for range drainers {
		go p.drainer(ctx)
	}
	for range p.o.Workers {
		go p.worker(ctx)
	}
}

// Close stops taking captures, commits the ones already finished (those in the spool journal
// for up to shutdownDrain; the rest stay there for the next start), cancels the uploads in
// flight (their entries stay pending) and waits up to ShutdownGrace for all of it.
func (p *Pipeline) Close() error {
	p.closed.Store(true)
	if p.cancel != nil {
		p.cancel()
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return p.journal.Close()
	case <-time.After(ShutdownGrace):
		return fmt.Errorf("close pipeline: still busy after %s", ShutdownGrace)
	}
}

// committer commits finished captures one at a time; at shutdown the committers drain the
// queue.
func (p *Pipeline) committer(ctx context.Context) {
	defer p.wg.Done()
	for {
		select {
		case c := <-p.commits:
			p.commit(c)
		case <-ctx.Done():
			for {
				select {
				case c := <-p.commits:
					p.commit(c)
				default:
					return
				}
			}
		}
	}
}

// commit moves one finished capture into the pending store and queues its upload.
func (p *Pipeline) commit(c finished) {
	defer os.Remove(c.spool) // no-op once adopted
	var (
		e       pending.Entry
		created bool
		err     error
	)
	if c.encoding == "" {
		e, created, err = p.commitPlain(c)
	} else {
		e, created, err = p.commitEncoded(c)
		if err == nil && c.print.size > 0 { // the next copy of these bytes needs no decoding
			p.prints.add(c.print, assetID{hash: e.Context.ContentHash, size: e.Context.FileSize})
		}
	}
	switch {
	case errors.Is(err, errKnown):
		p.stats.known.Add(1)
		return
	case err != nil:
		p.stats.shed.Add(1)
		p.log.Warn("capture not committed", zap.String("path", c.urlPath), zap.Error(err))
		return
	case !created: // already pending
		p.stats.known.Add(1)
		return
	}
	p.stats.committed.Add(1)
	if p.knownRemotely(e.Context.Key, e.Context.ContentHash) { // only known once decoded
		p.stats.known.Add(1)
		_ = p.store.Delete(e.ID)
		return
	}
	select {
	case p.uploads <- e.ID:
	default: // the workers are behind: the entry waits in the store for a retry pass
		p.log.Debug("upload queue full; entry waits for a retry pass", zap.String("id", e.ID))
	}
}

var errKnown = errors.New("asset already on the server")

func (p *Pipeline) commitPlain(c finished) (pending.Entry, bool, error) {
	a, err := NewAsset(c.urlPath, c.size, c.hash)
	if err != nil {
		return pending.Entry{}, false, err
	}
	if p.knownRemotely(a.Key, a.ContentHash) {
		return pending.Entry{}, false, errKnown
	}
	return p.store.Adopt(contextOf(a), p.o.Endpoint, headersOf(a, p.o.Endpoint), c.spool)
}

// commitEncoded decodes the spooled body into the store, which hashes it on the way: the
// uploaded bytes are the resource itself (SPEC §4).
func (p *Pipeline) commitEncoded(c finished) (pending.Entry, bool, error) {
	// Check the names with a stand-in hash and size; the real ones come from the bytes.
	a, err := NewAsset(c.urlPath, 1, zeroHash)
	if err != nil {
		return pending.Entry{}, false, err
	}
	f, err := os.Open(c.spool)
	if err != nil {
		return pending.Entry{}, false, fmt.Errorf("open spool: %w", err)
	}
	defer f.Close()
	dec, err := decoder(c.encoding, f)
	if err != nil {
		return pending.Entry{}, false, fmt.Errorf("decode %s: %w", c.encoding, err)
	}
	ctx := contextOf(a)
	ctx.ContentHash, ctx.FileSize = "", 0
	body := &limitedReader{r: dec, left: p.o.MaxAssetBytes}
	return p.store.Save(ctx, p.o.Endpoint, headersOf(a, p.o.Endpoint), body)
}

const zeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

func decoder(encoding string, r io.Reader) (io.Reader, error) {
	switch encoding {
	case "gzip", "x-gzip":
		return gzip.NewReader(r)
	case "deflate": // HTTP's deflate is zlib-wrapped; some servers send it raw
		return newDeflateReader(r)
	case "br":
		return brotli.NewReader(r), nil
	}
	return nil, fmt.Errorf("unsupported encoding %q", encoding)
}

// limitedReader fails, rather than truncates, a body longer than left: a decompression bomb
// or an asset over the server's limit is not committed at all.
type limitedReader struct {
	r    io.Reader
	left int64
}

var errTooLarge = errors.New("decoded body over max_asset_bytes")

func (l *limitedReader) Read(b []byte) (int, error) {
	if l.left < 0 {
		return 0, errTooLarge
	}
	if int64(len(b)) > l.left+1 {
		b = b[:l.left+1]
	}
	n, err := l.r.Read(b)
	l.left -= int64(n)
	if l.left < 0 {
		return 0, errTooLarge
	}
	return n, err
}

// newDeflateReader reads zlib-wrapped deflate, or raw deflate when the zlib header is absent.
func newDeflateReader(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(2)
	if len(head) == 2 && head[0]&0x0f == 8 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}

func (p *Pipeline) knownRemotely(key, hash string) bool {
	if p.o.Index != nil && p.o.Index.Known(key, hash) {
		return true
	}
	p.seenMu.Lock()
	defer p.seenMu.Unlock()
	_, ok := p.seen[keyHash{key, hash}]
	return ok
}

// remember records an asset the server now has: in the index when there is one (so memory
// grows with the server's keys, not with every upload of a long session), else in seen.
func (p *Pipeline) remember(a Asset) {
	if p.o.Index != nil {
		p.o.Index.Add(a.Key, a.ContentHash, a.Size)
		return
	}
	p.seenMu.Lock()
	p.seen[keyHash{a.Key, a.ContentHash}] = struct{}{}
	p.seenMu.Unlock()
}

// worker uploads the entries the committer queues, logging why one stays pending.
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
			d := p.Deliver(ctx, e)
			if (d.Class == Auth || d.Class == Transient) && !d.Cancelled {
				// DEBUG: a session-less game start would otherwise log a line per asset; the
				// app's minute summary counts them.
				p.log.Debug("Saved pending upload due to "+d.Reason,
					zap.String("id", e.ID), zap.String("key", e.Context.Key), zap.Stringer("class", d.Class))
			}
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

// Deliver uploads a pending entry and settles it: success deletes it, a transient failure
// records the attempt (and a Retry-After), a permanent one moves it to rejected/, an
// authentication failure leaves it untouched. One upload per entry at any time: an entry
// held by another Deliver is left alone.
func (p *Pipeline) Deliver(ctx context.Context, e pending.Entry) Delivery {
	return p.deliver(ctx, e, true)
}

// DeliverEarly is Deliver for an entry sent before it is due (a forced retry pass): a transient
// failure leaves it as it was, its attempts not counted.
func (p *Pipeline) DeliverEarly(ctx context.Context, e pending.Entry) Delivery {
	return p.deliver(ctx, e, false)
}

func (p *Pipeline) deliver(ctx context.Context, e pending.Entry, count bool) Delivery {
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
	d := Delivery{Class: res.Class, Reason: res.Reason}
	switch res.Class {
	case Success:
		p.stats.uploaded.Add(1)
		p.remember(a)
		if err := p.store.Delete(e.ID); err != nil {
			p.log.Warn("delete uploaded entry", zap.String("id", e.ID), zap.Error(err))
		}
	case Auth:
		p.stats.auth.Add(1)
	case Transient:
		if ctx.Err() != nil { // shutdown: not the server's fault, not an attempt
			d.Cancelled = true
			return d
		}
		p.stats.failed.Add(1)
		if !count {
			return d
		}
		now := time.Now()
		var notBefore time.Time
		if res.RetryAfter > 0 {
			notBefore = now.Add(res.RetryAfter)
		}
		if _, err := p.store.RecordAttempt(e.ID, now, res.Reason, notBefore); err != nil {
			p.log.Warn("record attempt", zap.String("id", e.ID), zap.Error(err))
		}
	default: // Permanent
		p.stats.rejected.Add(1)
		reason := res.Reason
		if res.Body != "" {
			reason += ": " + res.Body
		}
		if err := p.store.Reject(e.ID, reason); err != nil {
			p.log.Warn("reject entry", zap.String("id", e.ID), zap.Error(err))
		}
		p.log.Warn("Upload rejected by the server", zap.String("id", e.ID), zap.String("key", a.Key), zap.String("reason", reason))
	}
	return d
}

// Stats are the pipeline's counters since start.
type Stats struct {
	Captured  int64 `json:"captured"`      // complete captures handed over by the proxy
	Shed      int64 `json:"shed"`          // captures dropped: queue full, spool or store failure
	Skipped   int64 `json:"skipped"`       // responses declined by the asset rules
	Known     int64 `json:"already_known"` // captures the server or the store already had
	Committed int64 `json:"committed"`     // new pending entries
	Uploaded  int64 `json:"uploaded"`      // successful uploads (live and retried)
	Failed    int64 `json:"failed"`        // transient failures
	Rejected  int64 `json:"rejected"`      // permanent failures
	Auth      int64 `json:"auth"`          // uploads held back for want of a valid session
	Spooled   int64 `json:"spooled"`       // captures in the spool journal, not yet committed
}

// Stats returns the counters.
func (p *Pipeline) Stats() Stats {
	c := &p.stats
	return Stats{c.captured.Load(), c.shed.Load(), c.skipped.Load(), c.known.Load(), c.committed.Load(),
		c.uploaded.Load(), c.failed.Load(), c.rejected.Load(), c.auth.Load(), int64(p.Backlog())}
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
func headersOf(a Asset, endpoint string) map[string]string {
	h := map[string]string{"Content-Type": a.ContentType}
	if u, err := parseEndpoint(endpoint); err == nil {
		h["Origin"] = origin(u)
	}
	return h
}
