package assets

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"hash/maphash"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/pending"
)

// A capture keeps a body of up to maxMemoryBody in memory, in a pooled buffer sized from the
// response's Content-Length when it is sent: that covers the game's images, sounds and tables
// but for the largest few, so that a repeated one is recognised and dropped without touching
// the disk. A longer body is written to a pending draft as it streams.
const (
	minBuffer     = 16 << 10
	maxMemoryBody = 1 << 20
)

// bufferPools[i] holds buffers for bodies of up to minBuffer<<i bytes, up to maxMemoryBody.
var bufferPools [7]sync.Pool

// getBuffer returns an empty pooled buffer with room for at least size bytes (at most
// maxMemoryBody).
func getBuffer(size int) *[]byte {
	i, c := 0, minBuffer
	for c < size && c < maxMemoryBody {
		i, c = i+1, c<<1
	}
	if bp, ok := bufferPools[i].Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, c)
	return &b
}

// putBuffer returns a buffer from getBuffer to its pool.
func putBuffer(bp *[]byte) {
	*bp = (*bp)[:0]
	for i := range bufferPools {
		if cap(*bp) == minBuffer<<i {
			bufferPools[i].Put(bp)
			return
		}
	}
}

// Capture receives one response body as it streams to the client (proxy.Spool). Finish drops
// a body the pipeline already has and queues a new one for the committer, without blocking.
// The proxy calls Write and Finish from one goroutine.
type Capture struct {
	p        *Pipeline
	urlPath  string
	encoding string // "" for identity, else gzip, deflate or br
	body            // the body so far: in bufp until it outgrows it, then in draft
	// grows reports whether the buffer may grow towards maxMemoryBody: not when
	// Content-Length said the body is longer.
	grows bool
	out   *bufio.Writer // buffers the proxy's small writes to draft
	sum   hash.Hash     // SHA-256 of an identity body written to draft
	n     int64
	err   error
}

// Start is the proxy's hook (proxy.Sink): it applies the asset rules the proxy does not know
// (asset_sync.enable, asset_extensions, the encodings it can undo) and begins a capture.
// It returns nil to decline.
func (p *Pipeline) Start(req *http.Request, resp *http.Response) *Capture {
	if p.closed.Load() || !p.settings.Load().Enable {
		return nil
	}
	p.captures.busy()
	if !CapturablePath(req.URL.Path) || !p.extensionAllowed(req.URL.Path) {
		p.stats.skipped.Add(1)
		return nil
	}
	enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding")))
	switch enc {
	case "", "identity":
		enc = ""
	case "gzip", "x-gzip", "deflate", "br":
	default:
		p.stats.skipped.Add(1)
		p.log.Debug("capture skipped: unknown content encoding", zap.String("path", req.URL.Path), zap.String("encoding", enc))
		return nil
	}
	size, cl := minBuffer, resp.ContentLength
	if cl > minBuffer && cl <= maxMemoryBody {
		size = int(cl)
	}
	return &Capture{p: p, urlPath: req.URL.Path, encoding: enc, body: body{bufp: getBuffer(size)}, grows: cl <= maxMemoryBody}
}

// extensionAllowed reports whether the extension of urlPath's last segment is in
// asset_extensions.
func (p *Pipeline) extensionAllowed(urlPath string) bool {
	ext := strings.ToLower(strings.TrimPrefix(path.Ext(urlPath), "."))
	return ext != "" && slices.Contains(p.settings.Load().Extensions, ext)
}

// Write copies b to the buffer, or to the draft once the body outgrows the buffer. An error
// stops the capture, never the client.
func (c *Capture) Write(b []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.bufp != nil {
		buf := *c.bufp
		need := len(buf) + len(b)
		switch {
		case need <= cap(buf):
			*c.bufp = append(buf, b...)
		case c.grows && need <= maxMemoryBody:
			bp := getBuffer(need)
			*bp = append(append(*bp, buf...), b...)
			putBuffer(c.bufp)
			c.bufp = bp
		default:
			c.err = c.spill(b)
		}
	} else {
		c.err = c.writeDraft(b)
	}
	if c.err != nil {
		c.p.log.Warn("capture stopped: write failed", zap.String("path", c.urlPath), zap.Error(c.err))
		return 0, c.err
	}
	c.n += int64(len(b))
	return len(b), nil
}

// spill moves the buffered bytes to a new draft and writes b after them.
func (c *Capture) spill(b []byte) error {
	d, err := c.p.store.NewDraft()
	if err != nil {
		return err
	}
	c.draft, c.out = d, bufio.NewWriterSize(d, 64<<10)
	if c.encoding == "" {
		c.sum = sha256.New()
	}
	err = c.writeDraft(*c.bufp)
	putBuffer(c.bufp)
	c.bufp = nil
	if err != nil {
		return err
	}
	return c.writeDraft(b)
}

func (c *Capture) writeDraft(b []byte) error {
	if c.sum != nil {
		c.sum.Write(b)
	}
	_, err := c.out.Write(b)
	return err
}

// Finish ends the capture. A complete body the pipeline already has (on the server, uploaded,
// or pending) is dropped here, recognised by its print; a new one is queued for the committer,
// or shed (counted and logged) when the queue is full, rather than block the client.
func (c *Capture) Finish(complete bool) {
	p := c.p
	if c.draft != nil && c.err == nil {
		c.err = c.out.Flush()
	}
	if !complete || c.err != nil || c.n == 0 {
		c.body.release()
		return
	}
	p.stats.captured.Add(1)
	item := &capture{urlPath: c.urlPath, encoding: c.encoding, size: c.n, body: c.body}
	c.body = body{}
	if c.sum != nil {
		item.hash = hex.EncodeToString(c.sum.Sum(nil))
	}
	if item.bufp != nil {
		item.print = p.printOf(c.encoding, *item.bufp)
		if id, ok := p.prints.get(item.print); ok {
			if p.has(c.urlPath, id) {
				p.stats.known.Add(1)
				item.release()
				return
			}
			if c.encoding == "" {
				item.hash = id.hash
			}
		}
	}
	p.enqueue(item)
}

// enqueue hands a finished capture to the committer, or sheds it when the committer is that far
// behind: its queue full (maxQueued, or maxBusyQueued while captures stream in fast), or
// maxQueuedBytes of bodies waiting in memory.
func (p *Pipeline) enqueue(c *capture) {
	mem := c.memory()
	switch {
	case p.closed.Load():
		p.shed(c, "shutting down")
		return
	case len(p.commits) >= maxBusyQueued && !p.quiet():
		p.shed(c, "commit queue full")
		return
	case p.queuedBytes.Add(mem) > maxQueuedBytes:
		p.queuedBytes.Add(-mem)
		p.shed(c, "commit queue full")
		return
	}
	select {
	case p.commits <- c:
		p.queued.Add(1)
	default:
		p.queuedBytes.Add(-mem)
		p.shed(c, "commit queue full")
	}
}

// The commit queue holds at most maxQueued captures and maxQueuedBytes of their bodies: a game
// start (a few hundred new assets, 40 MB or so) several times over.
const (
	maxQueued      = 4096
	maxQueuedBytes = 192 << 20
)

// shed counts and logs a capture dropped for why, and releases it.
func (p *Pipeline) shed(c *capture, why string) {
	c.release()
	total := p.stats.shed.Add(1)
	// Under a flood of new assets many captures may be shed; a line each would flood the
	// log, so at most one a second, with the total.
	now, last := time.Now().UnixNano(), p.lastShedLog.Load()
	if last != 0 && now-last < int64(time.Second) || !p.lastShedLog.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn("capture shed: "+why, zap.String("path", c.urlPath), zap.Int64("size", c.size),
		zap.Int64("shed_total", total))
}

// capture is a finished capture waiting for its commit: its body in a pooled buffer, or
// written to a draft.
type capture struct {
	urlPath  string
	encoding string
	size     int64  // of the body as it came over the wire
	hash     string // SHA-256 of an identity body, when already known
	body
	print bodyPrint // zero for a body on disk
}

// body is a captured body: in a pooled buffer, or written to a draft.
type body struct {
	bufp  *[]byte        // the body in memory, or nil
	draft *pending.Draft // the body on disk, or nil
}

// memory returns the bytes of memory b holds.
func (b *body) memory() int64 {
	if b.bufp == nil {
		return 0
	}
	return int64(cap(*b.bufp))
}

// release gives back b's buffer and removes its draft, if it still has them.
func (b *body) release() {
	if b.bufp != nil {
		putBuffer(b.bufp)
		b.bufp = nil
	}
	if b.draft != nil {
		b.draft.Discard()
		b.draft = nil
	}
}

// bodyPrint identifies a body as it came over the wire, cheaply: its encoding, its size and
// the 64-bit maphash of its bytes under a seed made at random for each process (a microsecond
// or two for 50 KB, against tens for SHA-256). It only saves work for bodies the pipeline has
// seen: a repeat of a committed body is dropped without being hashed (or decoded) again.
type bodyPrint struct {
	encoding string
	size     int64
	sum      uint64
}

// assetID is what a body is as an asset: the SHA-256 and size of its decoded bytes.
type assetID struct {
	hash string
	size int64
}

func (p *Pipeline) printOf(encoding string, body []byte) bodyPrint {
	return bodyPrint{encoding: encoding, size: int64(len(body)), sum: maphash.Bytes(p.printSeed, body)}
}

// maxPrints bounds the print cache: more than the assets a game session loads.
const maxPrints = 8192

// printCache maps the prints of bodies committed or known to what they are.
type printCache struct {
	mu sync.Mutex
	m  map[bodyPrint]assetID // guarded by mu
}

func (c *printCache) get(pr bodyPrint) (assetID, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.m[pr]
	return id, ok
}

func (c *printCache) add(pr bodyPrint, id assetID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[bodyPrint]assetID)
	}
	if len(c.m) >= maxPrints {
		for k := range c.m { // an arbitrary one: a rarely repeated body is the likely loser
			delete(c.m, k)
			break
		}
	}
	c.m[pr] = id
}

// has is the one place that decides whether a capture is new: it reports whether the asset
// of urlPath (capturable, as Start checked) with id is on the server (the index, which also
// holds this process's uploads) or already pending.
func (p *Pipeline) has(urlPath string, id assetID) bool {
	key := keyOf(urlPath)
	return p.index.Known(key, id.hash) || p.store.Has(key, id.hash)
}

// counters are the pipeline's statistics.
type counters struct {
	captured, shed, skipped, known, committed, uploaded, failed, rejected, auth atomic.Int64
}
