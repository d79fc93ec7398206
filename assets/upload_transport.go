package assets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"time"

	"go.uber.org/zap"
)

// newDefaultTransport is http.DefaultTransport with the connect timeout
// applied to dialing and the TLS handshake, and enough idle connections per
// host for the upload workers. It verifies servers against the system roots.
func newDefaultTransport(connectTimeout time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	t.DialContext = d.DialContext
	t.TLSHandshakeTimeout = connectTimeout
	t.MaxIdleConnsPerHost = 16
	return t
}

// stallTransport fails a try that makes no progress for timeout: no request
// body byte read, no response yet, no response body byte read. A deadline
// on the whole try would cut off a large upload on a slow link that is
// moving all the while; this only catches a dead or silent peer.
type stallTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(t.timeout, func() { cancel(ErrStalled) })
	kick := func() { timer.Reset(t.timeout) }
	done := func() {
		timer.Stop()
		cancel(nil)
	}
	stalled := func(err error) error {
		switch {
		case err == nil || !errors.Is(context.Cause(ctx), ErrStalled):
			return err
		case errors.Is(err, ErrStalled): // net/http returned the cause
			return fmt.Errorf("no progress for %s: %w", t.timeout, err)
		}
		return fmt.Errorf("%w (no progress for %s): %w", ErrStalled, t.timeout, err)
	}

	r := req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		start := time.Now()
		r.Body = &progressBody{rc: req.Body, kick: kick, onEOF: func(sent int64) {
			timer.Reset(t.timeout + drainAllowance(sent, time.Since(start)))
		}}
	}
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		err = stalled(err)
		done()
		return nil, err
	}
	kick()
	resp.Body = &progressBody{rc: resp.Body, kick: kick, wrap: stalled, onClose: done}
	return resp, nil
}

// maxUnsentTail bounds how much of a request body may still sit in socket
// buffers (the kernel's send buffer grows to a few MiB on Linux) and in
// buffering hops after net/http has read its last byte.
const maxUnsentTail = 8 << 20

// drainAllowance is the extra time a try may stay silent after its whole
// body was handed to the connection: those bytes are still leaving at the
// link's pace, which looks like no progress from here. It is the time the
// unsent tail takes at the rate the body was taken so far.
func drainAllowance(sent int64, took time.Duration) time.Duration {
	if sent <= 0 || took <= 0 {
		return 0
	}
	rate := float64(sent) / took.Seconds() // bytes/s, an upper bound on the link's pace
	return time.Duration(float64(min(sent, maxUnsentTail)) / rate * float64(time.Second))
}

// progressBody reports each read to kick and, for a request body, the
// total at EOF to onEOF; wrap (if set) rewrites read errors and onClose
// (if set) runs once on Close.
type progressBody struct {
	rc      io.ReadCloser
	kick    func()
	onEOF   func(total int64)
	wrap    func(error) error
	onClose func()
	once    sync.Once
	total   int64
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.total += int64(n)
	if n > 0 {
		b.kick()
	}
	if err == io.EOF && b.onEOF != nil {
		b.onEOF(b.total)
		b.onEOF = nil
	}
	if err != nil && err != io.EOF && b.wrap != nil {
		err = b.wrap(err)
	}
	return n, err
}

func (b *progressBody) Close() error {
	err := b.rc.Close()
	if b.onClose != nil {
		b.once.Do(b.onClose)
	}
	return err
}

// rewinder hands out the request body of each try, read from the start of
// rs and limited to size, so nothing is buffered. net/http may still be
// reading the previous try's body after RoundTrip returns (see
// http.RoundTripper), so each call first waits until that body is closed.
type rewinder struct {
	ctx  context.Context
	rs   io.ReadSeeker
	size int64

	mu   sync.Mutex    // guards prev and serialises the hand-outs
	prev chan struct{} // closed when the last body handed out is closed
}

// body is a retryablehttp.ReaderFunc.
func (w *rewinder) body() (io.Reader, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.prev != nil {
		select {
		case <-w.prev:
		case <-w.ctx.Done():
			return nil, w.ctx.Err()
		}
	}
	if _, err := w.rs.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind body: %w", err)
	}
	closed := make(chan struct{})
	w.prev = closed
	return &closeNotifier{r: io.LimitReader(w.rs, w.size), closed: closed}, nil
}

type closeNotifier struct {
	r      io.Reader
	closed chan struct{}
	once   sync.Once
}

func (c *closeNotifier) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *closeNotifier) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// jitteredBackoff waits a random time between min and min·2^attempt,
// capped at max (full jitter, so workers that failed together do not retry
// together), or the server's Retry-After when that is longer; checkRetry
// has made sure it is at most max.
func jitteredBackoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	hi := maxWait
	if attempt < 30 && minWait<<attempt > 0 && minWait<<attempt < maxWait {
		hi = minWait << attempt
	}
	wait := minWait
	if hi > minWait {
		wait += rand.N(hi - minWait + 1)
	}
	if resp != nil {
		if ra, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok && ra > wait {
			wait = ra
		}
	}
	return wait
}

// retryLogger is retryablehttp's LeveledLogger on zap, at debug level: the
// uploader logs outcomes itself. Values go through redactQueries, as a URL
// in an error message could carry a secret in its query.
type retryLogger struct{ l *zap.Logger }

func (r retryLogger) log(msg string, kv []any) {
	if ce := r.l.Check(zap.DebugLevel, "retryablehttp: "+msg); ce != nil {
		fields := make([]zap.Field, 0, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			fields = append(fields, zap.String(fmt.Sprint(kv[i]), redactQueries(fmt.Sprint(kv[i+1]))))
		}
		ce.Write(fields...)
	}
}

func (r retryLogger) Error(msg string, kv ...any) { r.log(msg, kv) }
func (r retryLogger) Info(msg string, kv ...any)  { r.log(msg, kv) }
func (r retryLogger) Debug(msg string, kv ...any) { r.log(msg, kv) }
func (r retryLogger) Warn(msg string, kv ...any)  { r.log(msg, kv) }

var queryRe = regexp.MustCompile(`\?[^\s"']*`)

// redactQueries cuts the query out of anything that looks like a URL.
func redactQueries(s string) string { return queryRe.ReplaceAllString(s, "?[REDACTED]") }

// redactError hides URL queries in err's message; errors.Is and errors.As
// still see the chain.
func redactError(err error) error {
	if msg := redactQueries(err.Error()); msg != err.Error() {
		return &redactedError{msg: msg, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// describe is a short text for err without the request's URL: net/http's
// *url.Error becomes "Post: <cause>".
func describe(err error) string {
	if ue, ok := err.(*url.Error); ok {
		return ue.Op + ": " + redactQueries(ue.Err.Error())
	}
	return redactQueries(err.Error())
}
