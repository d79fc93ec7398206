package assets

import (
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
	"sync/atomic"

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
	f, err := os.CreateTemp(p.spoolDir, spoolPattern)
	if err != nil {
		p.stats.shed.Add(1)
		p.log.Warn("capture shed: cannot create spool file", zap.String("path", req.URL.Path), zap.Error(err))
		return nil
	}
	s := &Spool{p: p, f: f, urlPath: req.URL.Path, encoding: enc}
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
	n, err := s.f.Write(b)
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
	closeErr := s.f.Close()
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
