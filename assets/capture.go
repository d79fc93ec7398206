package assets

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/xxh3"
	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/internal/hugebuf"
	"github.com/fusou-proxy/fusou-proxy/internal/journal"
)

// spoolPattern names capture files in the spool folder while they stream.
const spoolPattern = "capture-*"

// A Spool keeps a body of up to maxMemoryBody in memory, in a pooled buffer sized from the
// response's Content-Length when it is sent, else starting at minBuffer and growing. That covers
// the game's images, sounds and tables but for the largest few, so that a repeated one is
// recognised and dropped without touching the disk and a new one costs one write into the spool
// journal. A longer body streams to a spool file of its own through a minBuffer buffer.
const (
	minBuffer     = 64 << 10
	maxMemoryBody = 1 << 20
)

// bufferPools[i] holds buffers for bodies of up to minBuffer<<i bytes, up to maxMemoryBody.
// Each has the journal's head room in front of the body and its slack behind (frameExtra), so
// that the journal writes a new capture from the buffer it was captured into.
var bufferPools [5]sync.Pool

// hugeBuffers is where buffers for bodies of up to 256 KiB come from first: memory in huge
// pages, from which the journal's O_DIRECT writes cost the kernel under half of what they
// cost from the Go heap (package hugebuf). It holds hugeArenaSize at most, resident once used:
// a flood of new 50 KB assets at 16 connections keeps about 120 buffers (8 MiB) in use.
// Past it, and on systems without it, buffers come from the pools.
var hugeBuffers = sync.OnceValue(func() *hugebuf.Arena {
	return hugebuf.New(hugeArenaSize, minBuffer+frameExtra, minBuffer<<1+frameExtra, minBuffer<<2+frameExtra)
})

const hugeArenaSize = 32 << 20

const frameExtra = journal.HeadRoom + journal.FrameSlack

// getBuffer returns an empty pooled buffer with room for a body of at least size bytes (at
// most maxMemoryBody); bodyOf gives the body's part of it.
func getBuffer(size int) *[]byte {
	i, c := 0, minBuffer
	for c < size && c < maxMemoryBody {
		i, c = i+1, c<<1
	}
	if bp := hugeBuffers().Get(c + frameExtra); bp != nil {
		return bp
	}
	if bp, ok := bufferPools[i].Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, c+frameExtra)
	return &b
}

// bodyOf returns the empty body part of a buffer from getBuffer, with the body's capacity.
func bodyOf(bp *[]byte) []byte {
	return (*bp)[journal.HeadRoom : journal.HeadRoom : cap(*bp)-journal.FrameSlack]
}

// frameOf returns the journal frame of a buffer from getBuffer holding body.
func frameOf(bp *[]byte, body []byte) []byte { return (*bp)[:journal.HeadRoom+len(body)] }

// putBuffer returns a buffer from getBuffer to its pool.
func putBuffer(bp *[]byte) {
	if hugeBuffers().Put(bp) {
		return
	}
	*bp = (*bp)[:0]
	for i := range bufferPools {
		if cap(*bp) == minBuffer<<i+frameExtra {
			bufferPools[i].Put(bp)
			return
		}
	}
}

// Spool receives one response body as it streams to the client. A body of up to maxMemoryBody
// stays in memory; a longer one goes on to a spool file, hashed on the way when it is not
// Content-Encoded. Finish recognises a body the pipeline already has and drops it, and hands
// a new one to the spool journal or the committers without blocking. The proxy calls Write and
// Finish from one goroutine.
type Spool struct {
	p        *Pipeline
	urlPath  string
	encoding string   // "" for identity, else gzip, deflate or br
	bufp     *[]byte  // pooled; the bytes not yet in the file
	buf      []byte   // *bufp, resliced
	f        *os.File // nil while the whole body fits in buf
	// grows reports whether buf may grow towards maxMemoryBody: not when Content-Length said
	// the body is longer.
	grows bool
	// sum is the SHA-256 of the bytes written to f, for an identity body that spilled to the
	// file; a body that stays in buf is hashed by a drainer, off the client's path.
	sum    hash.Hash
	n      int64
	failed bool
}

// Start is the proxy's hook (proxy.Sink): it applies the asset rules the proxy does not know
// (asset_sync.enable, asset_extensions, the encodings it can undo) and begins a capture.
// It returns nil to decline.
func (p *Pipeline) Start(req *http.Request, resp *http.Response) *Spool {
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
	bufp := getBuffer(size)
	return &Spool{p: p, urlPath: req.URL.Path, encoding: enc, bufp: bufp, buf: bodyOf(bufp), grows: cl <= maxMemoryBody}
}

// extensionAllowed reports whether the extension of urlPath's last segment is in
// asset_extensions.
func (p *Pipeline) extensionAllowed(urlPath string) bool {
	ext := strings.ToLower(strings.TrimPrefix(path.Ext(urlPath), "."))
	return ext != "" && slices.Contains(p.settings.Load().Extensions, ext)
}

// Write copies b to the buffer, or to the spool file once the body outgrows the buffer. An
// error stops the capture, never the client.
func (s *Spool) Write(b []byte) (int, error) {
	if s.failed {
		return 0, errSpoolFailed
	}
	if need := len(s.buf) + len(b); need > cap(s.buf) && s.grows && s.f == nil && need <= maxMemoryBody {
		s.grow(need)
	}
	if len(s.buf)+len(b) > cap(s.buf) {
		if err := s.spill(b); err != nil {
			s.failed = true
			s.p.log.Warn("capture stopped: spool write failed", zap.String("path", s.urlPath), zap.Error(err))
			return 0, fmt.Errorf("write spool: %w", err)
		}
	} else {
		s.buf = append(s.buf, b...)
	}
	s.n += int64(len(b))
	return len(b), nil
}

var errSpoolFailed = errors.New("spool write failed earlier")

// grow moves the buffered bytes to a pooled buffer of at least need bytes.
func (s *Spool) grow(need int) {
	bp := getBuffer(need)
	b := append(bodyOf(bp), s.buf...)
	putBuffer(s.bufp)
	s.bufp, s.buf = bp, b
}

// spill moves the buffered bytes to the spool file, taking one first if needed, and then
// buffers b, or writes it straight through when it is as large as the buffer.
func (s *Spool) spill(b []byte) error {
	if s.f == nil {
		f, err := s.p.spoolFile()
		if err != nil {
			return fmt.Errorf("create spool file: %w", err)
		}
		s.f = f
		if s.encoding == "" {
			s.sum = sha256.New()
		}
	}
	if err := s.writeFile(s.buf); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	if len(b) >= cap(s.buf) {
		return s.writeFile(b)
	}
	s.buf = append(s.buf, b...)
	return nil
}

func (s *Spool) writeFile(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if s.sum != nil {
		s.sum.Write(b)
	}
	_, err := s.f.Write(b)
	return err
}

// Finish ends the capture. A complete body the pipeline already has (uploaded, pending, or on
// the server's index) is dropped here; a new one is queued for commit, or shed (counted and
// logged) when the commit queue is full, rather than block the client.
func (s *Spool) Finish(complete bool) {
	p := s.p
	defer func() {
		if s.bufp != nil {
			putBuffer(s.bufp)
		}
		s.bufp, s.buf = nil, nil
	}()
	if !complete || s.failed || s.n == 0 {
		if s.f != nil {
			p.recycle(s.f)
		}
		return
	}
	if s.f == nil {
		s.finishInMemory()
		return
	}
	if err := s.writeFile(s.buf); err != nil {
		p.log.Warn("capture stopped: spool write failed", zap.String("path", s.urlPath), zap.Error(err))
		p.recycle(s.f)
		return
	}
	p.stats.captured.Add(1)
	c := finished{spool: s.f.Name(), urlPath: s.urlPath, encoding: s.encoding, size: s.n}
	if s.sum != nil {
		c.hash = hex.EncodeToString(s.sum.Sum(nil))
		if p.dropKnown(s.urlPath, c.size, c.hash) {
			p.recycle(s.f)
			return
		}
	}
	p.queue(s.f, c)
}

// finishInMemory is Finish for a body that fits in the buffer. A body seen before is
// recognised by its print, without SHA-256, which for a 50 KB asset costs about as much CPU
// as all the TLS work of proxying it; a new one goes to the spool journal as it is, for a
// drainer to hash and commit off the client's path (spooljournal.go). The first capture of a
// path is not printed here: it cannot be a repeat this process has seen, and its print (5 µs
// of the client's time for 50 KB) is taken by the drainer instead.
func (s *Spool) finishInMemory() {
	p := s.p
	p.stats.captured.Add(1)
	c := finished{urlPath: s.urlPath, encoding: s.encoding, size: s.n}
	if p.sawPath(s.urlPath) {
		c.print = p.printOf(s.encoding, s.buf)
		if id, ok := p.prints.get(c.print); ok {
			if p.dropKnown(s.urlPath, id.size, id.hash) {
				return
			}
			if s.encoding == "" {
				c.hash = id.hash
			}
		}
	}
	if p.journalCapture(c, s.bufp, frameOf(s.bufp, s.buf)) {
		s.bufp = nil // the journal's now; it goes back to the pool once written
	}
}

// dropKnown reports, and counts as known, a capture whose (key, hash) the pipeline already
// has: on the server (index or this process's uploads) or pending. A path that is not a valid
// asset is left for the committer to report.
func (p *Pipeline) dropKnown(urlPath string, size int64, hash string) bool {
	a, err := NewAsset(urlPath, size, hash)
	if err != nil || !(p.knownRemotely(a.Key, a.ContentHash) || p.store.Has(a.Key, a.ContentHash)) {
		return false
	}
	p.stats.known.Add(1)
	return true
}

func (p *Pipeline) queueFull() bool { return len(p.commits) == cap(p.commits) }

// queue closes a complete capture's spool file and hands it to the committers, or sheds it
// when their queue is full.
func (p *Pipeline) queue(f *os.File, c finished) {
	if p.queueFull() {
		p.shed(c.urlPath, c.size, "commit queue full")
		p.recycle(f)
		return
	}
	if err := f.Close(); err != nil {
		os.Remove(c.spool)
		p.stats.shed.Add(1)
		p.log.Warn("capture shed: spool write failed", zap.String("path", c.urlPath), zap.Error(err))
		return
	}
	select {
	case p.commits <- c:
	default:
		os.Remove(c.spool)
		p.shed(c.urlPath, c.size, "commit queue full")
	}
}

// shed counts and logs a capture dropped for why (the commit queue or the spool full, the spool
// failing).
func (p *Pipeline) shed(urlPath string, size int64, why string) {
	total := p.stats.shed.Add(1)
	// Under a flood of new assets nearly every capture may be shed; a line each would flood
	// the log (62,784 lines in 90 s of make bench), so at most one a second, with the total.
	now, last := time.Now().UnixNano(), p.lastShedLog.Load()
	if last != 0 && now-last < int64(shedLogEvery) || !p.lastShedLog.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn("capture shed: "+why, zap.String("path", urlPath), zap.Int64("size", size),
		zap.Int64("shed_total", total))
}

// shedLogEvery is the least time between two "capture shed" log lines.
const shedLogEvery = time.Second

// spareSpools is how many empty spool files are kept ready, so that a capture does not pay
// for creating one on the client's path.
const spareSpools = 16

// spoolFile takes a ready spool file, or makes one if none is ready.
func (p *Pipeline) spoolFile() (*os.File, error) {
	select {
	case f := <-p.spares:
		return f, nil
	default:
		return p.newSpoolFile()
	}
}

// newSpoolFile reuses one of the store's spare files (a delivered entry's), else creates one:
// on ext4 a rename costs far less than a create soon after removals (pending/spare.go).
func (p *Pipeline) newSpoolFile() (*os.File, error) {
	// "r" keeps these names apart from os.CreateTemp's, which are all digits.
	name := fmt.Sprintf("%sr%d", spoolPattern[:len(spoolPattern)-1], p.spoolSeq.Add(1))
	if f, ok := p.store.TakeSpare(filepath.Join(p.spoolDir, name)); ok {
		return f, nil
	}
	return os.CreateTemp(p.spoolDir, spoolPattern)
}

// recycle empties a spool file that was not committed and puts it back with the spares:
// truncating costs less than removing it and creating another, and drops its pages unwritten.
// Once the pipeline is closed, or when the spares are full, the file is removed instead.
func (p *Pipeline) recycle(f *os.File) {
	if !p.closed.Load() && f.Truncate(0) == nil {
		if _, err := f.Seek(0, io.SeekStart); err == nil {
			select {
			case p.spares <- f:
				return
			default:
			}
		}
	}
	f.Close()
	os.Remove(f.Name())
}

// keepSpares keeps the spares channel full until ctx ends, then removes the unused files.
func (p *Pipeline) keepSpares(ctx context.Context) {
	defer p.wg.Done()
	defer func() {
		for {
			select {
			case f := <-p.spares:
				f.Close()
				os.Remove(f.Name())
			default:
				return
			}
		}
	}()
	for {
		f, err := p.newSpoolFile()
		if err != nil {
			p.log.Warn("create spare spool file", zap.Error(err))
			select { // a full disk: try again later; captures create their own meanwhile
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		select {
		case p.spares <- f:
		case <-ctx.Done():
			f.Close()
			os.Remove(f.Name())
			return
		}
	}
}

// finished is a complete capture waiting in its spool file to be committed.
type finished struct {
	spool    string
	urlPath  string
	encoding string
	hash     string // of the bytes as spooled; "" when they are still encoded
	size     int64
	print    bodyPrint       // zero for a path's first capture, a body that did not fit in a Spool's buffer, or replayed
	rec      *journal.Record // the spool journal's copy, for a body that fit in the buffer
}

// bodyPrint identifies a body as it came over the wire, cheaply: its encoding, its size and
// the 128-bit XXH3 of its bytes under a seed made at random for each process. Two different
// bodies share a print with a chance of about 2^-128. XXH3 takes 1.3 µs for 50 KB where the
// 64-bit maphash it replaced took 6, on the client's path of every repeated asset. Unlike
// maphash it is not built to resist bodies crafted to collide; only the game's servers choose
// the bodies, over verified TLS, and a server that wanted the archive to hold other bytes
// could send those instead.
type bodyPrint struct {
	encoding string
	size     int64
	sum      xxh3.Uint128
}

// assetID is what a body is as an asset: the SHA-256 and size of its decoded bytes.
type assetID struct {
	hash string
	size int64
}

// maxPrints bounds the print cache: more than the assets a game session loads.
const maxPrints = 8192

// printCache maps the prints of bodies seen recently to their assetID, so that a repeated
// asset is recognised without hashing (or, when encoded, decoding) it again. It only saves
// work: what a body is still decides whether it is committed, by the same rules as before.
type printCache struct {
	mu sync.Mutex
	m  map[bodyPrint]assetID // guarded by mu
}

// printOf returns the print of body as it came over the wire.
func (p *Pipeline) printOf(encoding string, body []byte) bodyPrint {
	return bodyPrint{encoding: encoding, size: int64(len(body)), sum: xxh3.Hash128Seed(body, p.bodySeed)}
}

// pathSlots sizes the table of recently captured paths: twice the print cache's bound.
const pathSlots = 2 * maxPrints

// seenPaths remembers the URL paths captured recently, as the maphash of each in a slot
// chosen by that hash: a lookup is a load and a store, with no lock and no allocation, which
// matters when every capture is a new path. A path whose slot another took since reads as
// unseen, so its capture is printed by a drainer (as a path's first one is); two paths whose
// hashes are equal (a chance of 2^-64) read as seen, so the capture is printed on the spot.
// Either way only where the print is taken changes.
type seenPaths [pathSlots]atomic.Uint64

// sawPath reports whether urlPath was captured before (recently), and remembers it.
func (p *Pipeline) sawPath(urlPath string) bool {
	h := maphash.String(p.pathSeed, urlPath) | 1 // 0 marks an empty slot
	slot := &p.paths[h%pathSlots]
	if slot.Load() == h {
		return true
	}
	slot.Store(h)
	return false
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
	evictOne(c.m, maxPrints)
	c.m[pr] = id
}

// evictOne deletes an arbitrary key of m when m holds limit keys: a rarely repeated one is the
// likely loser.
func evictOne[K comparable, V any](m map[K]V, limit int) {
	if len(m) < limit {
		return
	}
	for k := range m {
		delete(m, k)
		return
	}
}

// sweepSpool removes what a previous run left in the spool folder: captures that were never
// committed, so never promised to anyone.
func sweepSpool(dir string, log *zap.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create spool folder: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, spoolPattern))
	if err != nil {
		return fmt.Errorf("list spool folder: %w", err)
	}
	for _, n := range names {
		if err := os.Remove(n); err == nil {
			log.Debug("removed stale spool file", zap.String("file", filepath.Base(n)))
		}
	}
	return nil
}

// counters are the pipeline's statistics.
type counters struct {
	captured, shed, skipped, known, committed, uploaded, failed, rejected, auth atomic.Int64
}
