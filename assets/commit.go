package assets

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/andybalholm/brotli"
	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/pending"
)

// The committer yields to the game as the uploads do (pace.go). For the first maxHold of a run
// of captures streaming in fast it holds what is queued, then writes it; from then on, while the
// run lasts, it writes at most maxBusyBatch at a time and rests between chunks (commitBatch),
// and the queue takes at most maxBusyQueued and sheds the rest. It makes the written entries
// durable (Store.Sync, an fsync per file) once the traffic is quiet, or maxSyncDelay after the
// last Sync. A game start on a fast link is a burst of hundreds of new assets in a fraction of a
// second: they are written just after it and synced after that, rather than compete for the CPU
// with the responses the player waits for. A capture is on disk, safe from a crash of the
// process, within maxHold and a batch's writes. Only a flood of new assets, faster than a game
// ever loads them, is shed.
const (
	maxHold       = 250 * time.Millisecond
	maxBusyBatch  = 512
	maxBusyQueued = 1024
	maxSyncDelay  = 10 * time.Second
	// syncCheckEvery is how often the committer looks whether the traffic went quiet.
	syncCheckEvery = 50 * time.Millisecond
)

// committer owns the commits. At shutdown it commits and syncs what is still queued, then
// returns.
func (p *Pipeline) committer(ctx context.Context) {
	defer p.wg.Done()
	tick := time.NewTicker(syncCheckEvery)
	defer tick.Stop()
	lastSync := time.Now()
	syncDue := func() bool {
		return p.store.Unsynced() > 0 && (p.quiet() || time.Since(lastSync) >= maxSyncDelay)
	}
	for {
		select {
		case first := <-p.commits:
			p.hold(ctx)
			limit := maxQueued
			if !p.quiet() {
				limit = maxBusyBatch
			}
			p.commitBatch(ctx, append([]*capture{first}, p.drain(limit-1)...))
		case <-tick.C:
		case <-ctx.Done():
			p.commitBatch(ctx, p.drain(maxQueued))
			p.sync()
			return
		}
		if syncDue() {
			p.sync()
			lastSync = time.Now()
		}
	}
}

// hold waits while a burst of captures is young: until maxHold has passed since the captures
// began to stream in fast, or the queue is three quarters full (maxBusyQueued), or holds half
// its bytes. A burst shorter than that (a game start on a fast link: 600 assets) is written
// after it; in a longer one the committer writes at once, so that a capture is soon safe from
// a crash.
func (p *Pipeline) hold(ctx context.Context) {
	from := time.Unix(0, p.captures.busySince())
	for !p.quiet() && time.Since(from) < maxHold && len(p.commits) < maxBusyQueued*3/4 &&
		p.queuedBytes.Load() < maxQueuedBytes/2 {
		if !sleepCtx(ctx, min(syncCheckEvery, maxHold-time.Since(from))) {
			return
		}
	}
}

// quiet reports whether captures have stopped streaming in fast (pace.go).
func (p *Pipeline) quiet() bool {
	return time.Since(time.Unix(0, p.captures.lastBusy())) >= quietAfter
}

// drain takes up to n of the captures queued now.
func (p *Pipeline) drain(n int) []*capture {
	var out []*capture
	for len(out) < n {
		select {
		case c := <-p.commits:
			out = append(out, c)
		default:
			return out
		}
	}
	return out
}

// commitChunk is how many captures are written to the store at once: small enough that the
// first of a large batch are on disk soon, on a platform where each file costs milliseconds.
const commitChunk = 32

// maxRest bounds the committer's rest after a chunk while captures stream in fast (commitBatch).
const maxRest = 10 * time.Millisecond

// commitBatch writes a batch of captures to the store as entries, not yet synced, in chunks.
// While captures stream in fast it rests after each chunk as long as the chunk took, up to
// maxRest. Where the writes are CPU work (a new file costs tens of µs, as on Linux) they then
// take at most half the committer's time and leave the CPU to the responses: a flood of new
// assets beyond that fills the queue and is shed. Where a new file costs milliseconds
// (Windows), a chunk takes far longer than maxRest and the commits slow only a little, so that
// a capture is still on disk soon.
func (p *Pipeline) commitBatch(ctx context.Context, batch []*capture) {
	for len(batch) > 0 {
		n := min(len(batch), commitChunk)
		start := time.Now()
		p.commitChunk(batch[:n])
		p.queued.Add(-int64(n))
		batch = batch[n:]
		if !p.quiet() {
			sleepCtx(ctx, min(time.Since(start), maxRest))
		}
	}
}

// commitChunk writes captures to the store as entries. Each is hashed (and decoded) into a
// draft first, in parallel, and dropped if the pipeline has it.
func (p *Pipeline) commitChunk(batch []*capture) {
	drafts := make([]*pending.Draft, len(batch))
	// More at once than there are cores: a draft is mostly waiting on a new file, which costs
	// milliseconds where file creation is slow (Windows).
	sem := make(chan struct{}, max(commitChunk/4, runtime.GOMAXPROCS(0)))
	var wg sync.WaitGroup
	for i, c := range batch {
		p.queuedBytes.Add(-c.memory())
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			drafts[i] = p.draft(c)
		})
	}
	wg.Wait()
	var ready []*pending.Draft
	var prints []bodyPrint
	for i, d := range drafts {
		if d != nil {
			ready = append(ready, d)
			prints = append(prints, batch[i].print)
		}
	}
	for i, r := range p.store.Commit(ready) {
		switch {
		case r.Err != nil: // logged by the store
			p.stats.shed.Add(1)
			continue
		case !r.Created: // committed meanwhile, by a capture of the same batch
			p.stats.known.Add(1)
		default:
			p.stats.committed.Add(1)
		}
		p.remember(prints[i], assetID{hash: r.Entry.Context.ContentHash, size: r.Entry.Context.FileSize})
	}
}

// sync makes the written entries durable and hands them to the upload workers.
func (p *Pipeline) sync() {
	entries, err := p.store.Sync()
	if err != nil {
		p.log.Error("Failed to sync pending uploads; trying again shortly", zap.Error(err))
		return
	}
	for _, e := range entries {
		p.queueUpload(e.ID)
	}
}

// queueUpload hands a committed entry to the upload workers; when their queue is full it
// stays in the store, for a worker's refill or a retry pass.
func (p *Pipeline) queueUpload(id string) {
	select {
	case p.uploads <- id:
	default:
		p.overflow.Store(true)
	}
}

// draft writes c's asset (its body decoded) to a draft and returns it with its context
// filled in, or returns nil when the pipeline has the asset already or c cannot be an asset.
func (p *Pipeline) draft(c *capture) *pending.Draft {
	defer c.release()
	// Check the names with a stand-in hash and size; the real ones come from the bytes.
	if _, err := NewAsset(c.urlPath, 1, zeroHash); err != nil {
		p.stats.shed.Add(1)
		p.log.Warn("capture not committed", zap.String("path", c.urlPath), zap.Error(err))
		return nil
	}
	if c.encoding == "" && c.bufp != nil && c.hash == "" {
		sum := sha256.Sum256(*c.bufp)
		c.hash = hex.EncodeToString(sum[:])
	}
	if c.hash != "" && p.has(c.urlPath, assetID{c.hash, c.size}) {
		p.remember(c.print, assetID{c.hash, c.size})
		p.stats.known.Add(1)
		return nil
	}
	d, id, err := p.write(c)
	if err != nil {
		if d != nil {
			d.Discard()
		}
		p.stats.shed.Add(1)
		p.log.Warn("capture not committed", zap.String("path", c.urlPath), zap.Error(err))
		return nil
	}
	if c.encoding != "" && p.has(c.urlPath, id) { // only known once decoded
		p.remember(c.print, id)
		p.stats.known.Add(1)
		d.Discard()
		return nil
	}
	a, _ := NewAsset(c.urlPath, id.size, id.hash)
	d.Context, d.TargetURL, d.Headers = contextOf(a), p.o.Endpoint, headersOf(a, p.origin)
	return d
}

// remember records what the body of print is, so that its next copy is dropped at Finish.
func (p *Pipeline) remember(print bodyPrint, id assetID) {
	if print.size > 0 {
		p.prints.add(print, id)
	}
}

// write puts c's asset in a draft: an identity body as it is, an encoded one decoded (the
// uploaded bytes are the resource itself, SPEC §4), hashed on the way.
func (p *Pipeline) write(c *capture) (*pending.Draft, assetID, error) {
	if c.encoding == "" {
		if c.draft != nil { // written and hashed as it streamed
			d := c.draft
			c.draft = nil
			return d, assetID{c.hash, c.size}, nil
		}
		d, err := p.store.NewDraft()
		if err == nil {
			_, err = d.Write(*c.bufp)
		}
		return d, assetID{c.hash, c.size}, err
	}
	var src io.Reader
	if c.bufp != nil {
		src = bytes.NewReader(*c.bufp)
	} else {
		r, err := c.draft.Reader()
		if err != nil {
			return nil, assetID{}, err
		}
		defer r.Close()
		src = r
	}
	dec, err := decoder(c.encoding, src)
	if err != nil {
		return nil, assetID{}, fmt.Errorf("decode %s: %w", c.encoding, err)
	}
	d, err := p.store.NewDraft()
	if err != nil {
		return nil, assetID{}, err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(d, h), &limitedReader{r: dec, left: p.o.MaxAssetBytes}); err != nil {
		return d, assetID{}, fmt.Errorf("decode %s: %w", c.encoding, err)
	}
	return d, assetID{hex.EncodeToString(h.Sum(nil)), d.Size()}, nil
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

// newDeflateReader reads zlib-wrapped deflate, or raw deflate when the zlib header is absent.
func newDeflateReader(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(2)
	if len(head) == 2 && head[0]&0x0f == 8 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
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
