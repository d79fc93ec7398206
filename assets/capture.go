package assets

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// spoolPattern names capture files in the spool folder while they stream.
const spoolPattern = "capture-*"

// Spool receives one response body as it streams to the client, into a file in the spool
// folder, hashing it on the way when it is not Content-Encoded. Finish hands a complete
// capture to the pipeline without blocking. The proxy calls Write and Finish from one goroutine.
type Spool struct {
	p        *Pipeline
	f        *os.File
	w        *bufio.Writer // batches the proxy's small chunks into few file writes
	urlPath  string
	encoding string    // "" for identity, else gzip, deflate or br
	sum      hash.Hash // nil when encoded: the hash is of the decoded bytes, taken at commit
	n        int64
	failed   bool
}

// Start is the proxy's hook (proxy.Sink): it applies the asset rules the proxy does not know
// (asset_sync.enable, asset_skip_extensions, the encodings it can undo) and opens a spool
// file. It returns nil to decline.
func (p *Pipeline) Start(req *http.Request, resp *http.Response) *Spool {
	if p.closed.Load() || !p.settings.Load().Enable {
		return nil
	}
	if p.skipExtension(req.URL.Path) {
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
	f, err := p.spoolFile()
	if err != nil {
		p.stats.shed.Add(1)
		p.log.Warn("capture shed: cannot create spool file", zap.String("path", req.URL.Path), zap.Error(err))
		return nil
	}
	s := &Spool{p: p, f: f, w: bufioPool.Get().(*bufio.Writer), urlPath: req.URL.Path, encoding: enc}
	s.w.Reset(f)
	if enc == "" {
		s.sum = sha256.New()
	}
	return s
}

func (p *Pipeline) skipExtension(urlPath string) bool {
	ext := strings.ToLower(strings.TrimPrefix(path.Ext(urlPath), "."))
	for _, skip := range p.settings.Load().SkipExtensions {
		if ext == skip {
			return true
		}
	}
	return false
}

// Write copies p to the spool file. An error stops the capture, never the client.
func (s *Spool) Write(b []byte) (int, error) {
	if s.failed {
		return 0, errSpoolFailed
	}
	n, err := s.w.Write(b)
	s.n += int64(n)
	if s.sum != nil {
		s.sum.Write(b[:n])
	}
	if err != nil {
		s.failed = true
		s.p.log.Warn("capture stopped: spool write failed", zap.String("path", s.urlPath), zap.Error(err))
		return n, fmt.Errorf("write spool: %w", err)
	}
	return n, nil
}

var errSpoolFailed = errors.New("spool write failed earlier")

// Finish ends the capture. A complete one is queued for commit; when the commit queue is
// full the capture is shed (counted and logged) rather than block the client.
func (s *Spool) Finish(complete bool) {
	name := s.f.Name()
	flushErr := s.w.Flush()
	s.w.Reset(nil)
	bufioPool.Put(s.w)
	closeErr := s.f.Close()
	if closeErr == nil {
		closeErr = flushErr
	}
	if !complete || s.failed || closeErr != nil || s.n == 0 {
		os.Remove(name)
		return
	}
	c := finished{spool: name, urlPath: s.urlPath, encoding: s.encoding, size: s.n}
	if s.sum != nil {
		c.hash = hex.EncodeToString(s.sum.Sum(nil))
	}
	s.p.stats.captured.Add(1)
	select {
	case s.p.commits <- c:
	default:
		os.Remove(name)
		s.p.stats.shed.Add(1)
		s.p.log.Warn("capture shed: commit queue full", zap.String("path", s.urlPath), zap.Int64("size", s.n))
	}
}

// spoolBufferSize covers a typical game image in one write.
const spoolBufferSize = 64 << 10

var bufioPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, spoolBufferSize) }}

// spareSpools is how many empty spool files are kept ready, so that a capture does not pay
// for creating one on the client's path.
const spareSpools = 16

// spoolFile takes a ready spool file, or creates one if none is ready.
func (p *Pipeline) spoolFile() (*os.File, error) {
	select {
	case f := <-p.spares:
		return f, nil
	default:
		return os.CreateTemp(p.spoolDir, spoolPattern)
	}
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
		f, err := os.CreateTemp(p.spoolDir, spoolPattern)
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
