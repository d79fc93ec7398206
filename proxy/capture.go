package proxy

import (
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// CaptureRules are the proxy's half of the capture conditions (SPEC §4). The Sink applies
// the rest (e.g. skipped extensions). The zero value captures nothing.
type CaptureRules struct {
	// Enable turns capture on.
	Enable bool
	// PathPrefixes: a captured URL path starts with one of these.
	PathPrefixes []string
	// SkipPathPrefixes: a captured URL path starts with none of these.
	SkipPathPrefixes []string
	// MaxAssetBytes caps a capture (proxy.capture.max_asset_bytes); a larger body streams to
	// the client uncaptured. Zero or less means no cap.
	MaxAssetBytes int64
}

// normalized returns a copy that shares no slices with r, MaxInt64 standing for no cap, so that a
// caller changing its slices after SetCapture cannot race with traffic.
func (r CaptureRules) normalized() *CaptureRules {
	r.PathPrefixes = slices.Clone(r.PathPrefixes)
	r.SkipPathPrefixes = slices.Clone(r.SkipPathPrefixes)
	if r.MaxAssetBytes <= 0 {
		r.MaxAssetBytes = math.MaxInt64
	}
	return &r
}

// wants reports whether the exchange passes the proxy's capture conditions, before any
// body byte is read: a GET to a MITM host answered 200, a path inside the prefixes and
// outside the skipped ones, and a Content-Length (when sent) from 1 to MaxAssetBytes.
// 206, 304 and HEAD fail the method or status test.
func (r *CaptureRules) wants(mitmHosts []string, req *http.Request, resp *http.Response) bool {
	if !r.Enable || req.Method != http.MethodGet || resp.StatusCode != http.StatusOK {
		return false
	}
	if resp.Body == nil || resp.Body == http.NoBody || resp.ContentLength == 0 || resp.ContentLength > r.MaxAssetBytes {
		return false
	}
	if !MatchHost(req.URL.Host, mitmHosts) {
		return false
	}
	path := req.URL.Path
	return hasAnyPrefix(path, r.PathPrefixes) && !hasAnyPrefix(path, r.SkipPathPrefixes)
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if p != "" && strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// maybeCapture wraps resp.Body in a tee when the exchange passes the rules and the Sink
// accepts it. It runs on the client's path, before the response head is written.
func (p *Proxy) maybeCapture(req *http.Request, resp *http.Response) {
	rules := p.rules.Load()
	if p.sink == nil || !rules.wants(p.mitmHosts, req, resp) {
		return
	}
	spool := p.startSpool(req, resp)
	if spool == nil {
		return
	}
	p.stats.capturesStarted.Add(1)
	resp.Body = &teeBody{
		body:  resp.Body,
		p:     p,
		where: req.URL.Host + req.URL.Path,
		limit: rules.MaxAssetBytes,
		want:  resp.ContentLength,
		spool: spool,
	}
}

// startSpool calls Sink.Start; a panic in it costs the capture, never the response.
func (p *Proxy) startSpool(req *http.Request, resp *http.Response) (s Spool) {
	defer func() {
		if v := recover(); v != nil {
			p.recovered("sink start", req.URL.Host+req.URL.Path, v)
			s = nil
		}
	}()
	return p.sink.Start(req, resp)
}

// teeBody copies each chunk of a response body to a Spool as the client's side reads it,
// so a capture costs no extra buffering and no goroutine. It ends the spool exactly once:
// complete at a clean EOF, aborted on a read error, a Close before EOF (client gone), a
// body over the limit, or a failing Spool. The client always gets exactly the bytes and
// errors of the upstream body, whatever the Spool does.
type teeBody struct {
	body  io.ReadCloser
	p     *Proxy
	where string // host and path, for log lines
	limit int64  // MaxAssetBytes when the capture started
	want  int64  // Content-Length, or -1 when upstream sent none

	// mu guards spool and n. Read and Close come from one goroutine in goproxy's paths
	// today; the lock keeps a Close from another goroutine safe too.
	mu    sync.Mutex
	spool Spool // nil once Finish was called
	n     int64 // bytes read so far
}

func (t *teeBody) Read(b []byte) (int, error) {
	n, err := t.body.Read(b)
	t.mu.Lock()
	if t.spool != nil {
		t.teeLocked(b[:n], err)
	}
	t.mu.Unlock()
	return n, err
}

// teeLocked hands one read's result to the spool. t.mu must be held and t.spool non-nil.
func (t *teeBody) teeLocked(b []byte, err error) {
	if len(b) > 0 {
		t.n += int64(len(b))
		if t.n > t.limit {
			t.p.log.Debug("capture dropped: body over the limit",
				zap.String("url", t.where), zap.Int64("limit", t.limit))
			t.finishLocked(false)
			return
		}
		if !t.writeLocked(b) {
			t.finishLocked(false)
			return
		}
	}
	switch {
	case err == io.EOF:
		// Go's Transport already reports a body shorter than its Content-Length as
		// io.ErrUnexpectedEOF; the length check is a second guard.
		t.finishLocked(t.n > 0 && (t.want < 0 || t.n == t.want))
	case err != nil:
		t.finishLocked(false)
	}
}

// writeLocked writes b to the spool and reports success. t.mu must be held.
func (t *teeBody) writeLocked(b []byte) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			t.p.recovered("spool write", t.where, v)
			ok = false
		}
	}()
	n, err := t.spool.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		t.p.log.Warn("capture dropped: spool write failed", zap.String("url", t.where), zap.Error(err))
		return false
	}
	return true
}

// finishLocked ends the capture. t.mu must be held.
func (t *teeBody) finishLocked(complete bool) {
	s := t.spool
	t.spool = nil
	if complete {
		t.p.stats.capturesCompleted.Add(1)
	} else {
		t.p.stats.capturesAborted.Add(1)
	}
	defer func() {
		if v := recover(); v != nil {
			t.p.recovered("spool finish", t.where, v)
		}
	}()
	s.Finish(complete)
}

// Close ends an unfinished capture as aborted: the body was not read to its end, because
// the client went away or the proxy gave up on the response.
func (t *teeBody) Close() error {
	t.mu.Lock()
	if t.spool != nil {
		t.finishLocked(false)
	}
	t.mu.Unlock()
	return t.body.Close()
}
