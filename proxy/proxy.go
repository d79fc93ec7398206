// Package proxy is fusou-proxy's HTTP(S) proxy: it decrypts (MITM) only the game's hosts,
// tunnels every other CONNECT byte for byte, and tees the game's asset responses to a Sink
// while they stream to the client. It knows nothing of uploading: package assets implements
// Sink. Start with Options and New; Proxy.ServeHTTP is the proxy listener's handler.
//
// It is built on github.com/elazarl/goproxy v1.9.3, wired as follows (docs/bench/proxy.md
// has the numbers behind the choices):
//
//   - CONNECT to a host within Options.MITMHosts is decrypted with a leaf from
//     Options.Certs; any other CONNECT is a raw tunnel (ConnectAccept), so the client sees
//     the upstream's own certificate. goproxy's built-in CA (GoproxyCa) is never used.
//   - goproxy's default Transport skips upstream verification and honours HTTPS_PROXY;
//     both are replaced: upstream TLS is always verified against Options.UpstreamRoots
//     (nil: system roots), no environment proxy is used, and Options.DialRules apply to
//     tunnels, MITM'd requests and plain HTTP alike. A certificate failure answers 502 and
//     logs a warning.
//   - goproxy rewrites a MITM'd response to chunked and drops its Content-Length whenever a
//     response handler replaces resp.Body (https.go, "bodyModified"). So the capture tee is
//     installed inside the per-request RoundTripper (ProxyCtx.RoundTripper), before goproxy
//     records the body: goproxy then sees an unmodified body and keeps the upstream framing
//     (Content-Length, or chunked when upstream sent no length). KeepAcceptEncoding and
//     Transport.DisableCompression keep Content-Encoding end to end.
//   - What remains different from upstream: header names are canonicalised and written in
//     sorted order (net/http), an HTTP/2 upstream's response reaches an HTTP/1.1 client as
//     HTTP/1.1, and a body without any length (close-delimited) is sent chunked so the client
//     connection stays alive.
//   - HTTP/2 towards the client (goproxy's AllowHTTP2) is off. With the browser on HTTP/1.1
//     its own per-host connection limit (six) bounds how many requests reach the game server
//     at once, exactly as without the proxy; with HTTP/2 a browser would multiplex far more
//     streams on one connection and the proxy would fan them out to as many upstream
//     connections, a traffic shape the game server never sees from a plain browser. It is
//     slower too: with 16 concurrent 50 KB downloads a Go client got 0.52x the request rate
//     over HTTP/2 at 1.9x the CPU per request (docs/bench/proxy.md).
//   - Every function goproxy calls back (CONNECT decision, leaf lookup, RoundTripper, body
//     tee, dialer) and ServeHTTP itself recover from panics: the client gets a 502 (or, if the
//     response had begun, a closed connection), the panic is logged and counted. A panic inside
//     goproxy's own MITM goroutine cannot be caught from outside it.
//   - A client abort reaches upstream as a cancelled request context. On the HTTP/1.1 MITM
//     path goproxy reads the client's requests itself and notices an abort only at its next
//     write to the client (mid-body), not while waiting for upstream's response head; plain
//     HTTP requests are cancelled at once.
//   - Served on internal/connlimit's Listener (as cmd/fusou-proxy does), a MITM'd connection
//     reports its client handshake, each request's start and end (goproxy closes the response
//     body once the response is written) and a WebSocket upgrade to the listener, which times
//     it out and may evict it between requests (SPEC §11). A raw tunnel is left to the
//     listener's tunnel rules. On any other listener nothing of this happens.
package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"go.uber.org/zap"
)

// CertSource gives the leaf certificate for a MITM'd host; certs.Authority implements it.
type CertSource interface {
	// LeafFor returns a certificate for host (no port), valid for the client to trust.
	// It is called once per MITM'd connection and must be safe for concurrent use; caching
	// is the implementation's job.
	LeafFor(host string) (*tls.Certificate, error)
}

// Sink receives captures; package assets implements it.
type Sink interface {
	// Start is called on the client's path for a response that passed the proxy's capture
	// rules, before its head is sent to the client. It returns nil to decline (assets
	// applies its own rules, e.g. extension). It must not read or replace resp.Body, nor
	// change req or resp, and must return quickly.
	Start(req *http.Request, resp *http.Response) Spool
}

// Spool receives one response body as it streams to the client.
//
// Write gets the body bytes exactly as they came from upstream (still Content-Encoded), in
// order, each chunk as the client's side reads it (often one TLS record, at most 16 KB, so
// a file-backed Spool should buffer). It is called on the client's path, so it must be
// quick (a local file write). An error or panic stops the capture (then Finish(false)) and
// never affects the client.
//
// Finish is called exactly once, and no Write follows it. complete is true only when the
// body was read to its end, was not empty, matched the Content-Length upstream sent (if
// any) and stayed within MaxAssetBytes; it is false for a client abort, an upstream
// truncation or error, an over-limit body or a failed Write. "Complete" is about the bytes
// captured: a client that disconnects after upstream's last byte was read still leaves a
// complete capture. Finish also runs on the client's path, possibly before the last bytes
// reach the client: it must hand any slow work (fsync, commit, upload) to another goroutine.
type Spool interface {
	io.Writer
	Finish(complete bool)
}

// Options configure a Proxy. The zero value is a working proxy that decrypts nothing and
// captures nothing.
type Options struct {
	// MITMHosts are the domains decrypted, each with its subdomains, case-insensitive, any
	// port. Nil or empty: every CONNECT is tunneled.
	MITMHosts []string
	// DialRules redirect dials (tunnels, MITM'd requests and plain HTTP); the first match
	// wins. Nil: dial the requested address.
	DialRules []DialRule
	// UpstreamRoots verify upstream servers of MITM'd requests. Nil: the system roots.
	UpstreamRoots *x509.CertPool
	// Certs signs MITM leaves. Required when MITMHosts is not empty.
	Certs CertSource
	// Sink receives captures. Nil: nothing is captured.
	Sink Sink
	// Capture is the initial capture policy; see SetCapture.
	Capture CaptureRules
	// Logger gets the proxy's log lines. Nil: zap.NewNop().
	Logger *zap.Logger
}

// Stats are counters since New; see Proxy.Stats.
type Stats struct {
	Requests            uint64 // requests sent upstream: plain HTTP, and each one inside a MITM'd connection
	MITM                uint64 // CONNECTs decrypted
	Tunnels             uint64 // CONNECTs tunneled untouched
	CapturesStarted     uint64 // responses handed to a Spool
	CapturesCompleted   uint64 // Finish(true)
	CapturesAborted     uint64 // Finish(false)
	UpstreamTLSFailures uint64 // upstream certificates that failed verification
	PanicsRecovered     uint64 // panics caught in the proxy's handlers and callbacks
}

// Upstream connection pool sizes. A browser opens at most six HTTP/1.1 connections per host;
// the idle pool is larger so a burst from several tabs or a benchmark does not churn
// connections.
const (
	maxIdleConns        = 128
	maxIdleConnsPerHost = 32
)

// newTransport is the upstream side. It replaces goproxy's default, which skips certificate
// verification and follows HTTPS_PROXY.
func newTransport(roots *x509.CertPool, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // never an environment proxy: the game is reached directly
		DialContext:           dial,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		DisableCompression:    true, // keep Content-Encoding: the client gets upstream's bytes
		MaxIdleConns:          maxIdleConns,
		MaxIdleConnsPerHost:   maxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}
}

// Proxy is the HTTP(S) proxy. It is safe for concurrent use.
type Proxy struct {
	log       *zap.Logger
	mitmHosts []string
	dialRules []DialRule
	certs     CertSource
	sink      Sink
	rules     atomic.Pointer[CaptureRules]
	tr        *http.Transport
	gp        *goproxy.ProxyHttpServer
	clientTLS *tls.Config // base of every MITM'd connection's server config
	mitm      *goproxy.ConnectAction
	tunnel    *goproxy.ConnectAction

	// testHookServe, when set by a test, runs at the start of ServeHTTP.
	testHookServe func(*http.Request)

	stats struct {
		requests, mitm, tunnels                             atomic.Uint64
		capturesStarted, capturesCompleted, capturesAborted atomic.Uint64
		upstreamTLSFailures, panicsRecovered                atomic.Uint64
	}
}

// New builds a Proxy from o.
func New(o Options) (*Proxy, error) {
	p := &Proxy{
		log:       o.Logger,
		dialRules: append([]DialRule(nil), o.DialRules...),
		certs:     o.Certs,
		sink:      o.Sink,
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	for _, d := range o.MITMHosts {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if d == "" {
			return nil, errors.New("new proxy: empty domain in mitm hosts")
		}
		p.mitmHosts = append(p.mitmHosts, d)
	}
	if len(p.mitmHosts) > 0 && p.certs == nil {
		return nil, errors.New("new proxy: mitm hosts set but no certificate source")
	}
	p.SetCapture(o.Capture)

	// One ticket key shared by every MITM'd connection lets a returning client resume its
	// TLS session instead of paying a full handshake; goproxy clones this config, and a
	// clone keeps the keys. The key lives only in memory and changes on restart.
	p.clientTLS = &tls.Config{MinVersion: tls.VersionTLS12}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("new proxy: make session ticket key: %w", err)
	}
	p.clientTLS.SetSessionTicketKeys([][32]byte{key})

	p.tr = newTransport(o.UpstreamRoots, p.dialContext)
	p.mitm = &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: p.mitmTLSConfig}
	p.tunnel = &goproxy.ConnectAction{Action: goproxy.ConnectAccept}

	gp := goproxy.NewProxyHttpServer()
	gp.Logger = goproxyLogger{p.log}
	gp.Tr = p.tr
	gp.ConnectDial = nil // NewProxyHttpServer sets it from HTTPS_PROXY
	gp.ConnectDialWithReq = p.connectDial
	gp.KeepAcceptEncoding = true
	gp.AllowHTTP2 = false // see the package comment
	gp.NonproxyHandler = http.HandlerFunc(nonProxy)
	gp.OnRequest().HandleConnect(goproxy.FuncHttpsHandler(p.handleConnect))
	rt := goproxy.RoundTripperFunc(p.roundTrip)
	gp.OnRequest().Do(goproxy.FuncReqHandler(func(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		ctx.RoundTripper = rt
		return r, nil
	}))
	p.gp = gp
	return p, nil
}

// SetCapture replaces the capture rules; requests already under way keep the rules they
// started with. It is safe to call while the proxy serves traffic (config reload).
func (p *Proxy) SetCapture(r CaptureRules) {
	p.rules.Store(r.normalized())
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Requests:            p.stats.requests.Load(),
		MITM:                p.stats.mitm.Load(),
		Tunnels:             p.stats.tunnels.Load(),
		CapturesStarted:     p.stats.capturesStarted.Load(),
		CapturesCompleted:   p.stats.capturesCompleted.Load(),
		CapturesAborted:     p.stats.capturesAborted.Load(),
		UpstreamTLSFailures: p.stats.upstreamTLSFailures.Load(),
		PanicsRecovered:     p.stats.panicsRecovered.Load(),
	}
}

// CloseIdleConnections closes idle upstream connections, for shutdown and tests.
func (p *Proxy) CloseIdleConnections() {
	p.tr.CloseIdleConnections()
}

// ServeHTTP serves one request to the proxy listener: a CONNECT, or an absolute-URI request
// for plain HTTP. A panic below it is logged, counted and answered with 502 when nothing has
// been sent yet; otherwise the connection is closed so the client never sees a response
// that is wrong.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tw := &trackingWriter{ResponseWriter: w}
	var rw http.ResponseWriter = tw
	if _, ok := w.(http.Hijacker); ok {
		// goproxy decides how to tunnel by whether the writer can be hijacked.
		rw = hijackingWriter{tw}
	}
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			panic(v) // net/http's own way to abort a response; it logs nothing
		}
		p.recovered("serve", r.Host, v)
		switch {
		case tw.conn != nil:
			_ = tw.conn.Close()
		case !tw.wrote:
			http.Error(w, "fusou-proxy: internal error", http.StatusBadGateway)
		default:
			panic(http.ErrAbortHandler)
		}
	}()
	if p.testHookServe != nil {
		p.testHookServe(r)
	}
	if r.Method == http.MethodConnect {
		r = withWriter(r, tw)
	}
	p.gp.ServeHTTP(rw, r)
}

// handleConnect decides MITM or tunnel for a CONNECT.
func (p *Proxy) handleConnect(host string, ctx *goproxy.ProxyCtx) (action *goproxy.ConnectAction, to string) {
	if MatchHost(host, p.mitmHosts) {
		p.stats.mitm.Add(1)
		markMITM(ctx)
		return p.mitm, host
	}
	p.stats.tunnels.Add(1)
	return p.tunnel, host
}

// mitmTLSConfig is the server side of a MITM'd connection. goproxy calls it from the
// connection's own goroutine, where a panic would end the process.
func (p *Proxy) mitmTLSConfig(host string, ctx *goproxy.ProxyCtx) (cfg *tls.Config, err error) {
	defer func() {
		if v := recover(); v != nil {
			cfg, err = nil, p.recovered("leaf certificate", host, v)
		}
	}()
	name := normalizeHost(host)
	leaf, err := p.certs.LeafFor(name)
	if err != nil {
		p.log.Warn("leaf certificate failed", zap.String("host", name), zap.Error(err))
		return nil, fmt.Errorf("leaf certificate for %s: %w", name, err)
	}
	cfg = p.clientTLS.Clone()
	cfg.Certificates = []tls.Certificate{*leaf}
	if tc := trackerOf(ctx); tc != nil {
		onHandshakeDone(cfg, tc)
	}
	return cfg, nil
}

// connectDial opens a tunnel's upstream connection. goproxy writes a 502 when it fails.
func (p *Proxy) connectDial(req *http.Request, network, addr string) (net.Conn, error) {
	c, err := p.dialContext(req.Context(), network, addr)
	if err != nil {
		p.log.Info("tunnel dial failed", zap.String("host", addr), zap.Error(err))
		return nil, err
	}
	return c, nil
}

// recovered logs and counts a recovered panic and returns it as an error.
func (p *Proxy) recovered(where, host string, v any) error {
	p.stats.panicsRecovered.Add(1)
	p.log.Error("recovered panic", zap.String("in", where), zap.String("host", host),
		zap.Any("panic", v), zap.StackSkip("stack", 2))
	return fmt.Errorf("%s: panic: %v", where, v)
}

func nonProxy(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "fusou-proxy: this is an HTTP proxy; set it as the browser's proxy", http.StatusBadRequest)
}

// trackingWriter records whether a response has begun, or the connection was taken over,
// so that ServeHTTP's recover knows what the client has already seen.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool      // a status or body byte went out
	conn  net.Conn  // set once hijacked
	mitm  *mitmConn // set by handleConnect for a CONNECT that will be decrypted
}

func (w *trackingWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *trackingWriter) Flush() {
	w.wrote = true
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// hijackingWriter is a trackingWriter that is also an http.Hijacker, used only when the
// server's writer is one.
type hijackingWriter struct{ *trackingWriter }

func (w hijackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.conn = c
		if tc, ok := c.(trackedConn); ok && w.mitm != nil {
			w.mitm.tracked = tc
			tc.Handshaking()
		}
	}
	return c, rw, err
}

// goproxyLogger routes goproxy's messages to zap. goproxy (not Verbose) only reports
// warnings, mostly clients and servers closing connections, which is normal traffic: they go
// to debug, except a failed TLS handshake with the client, which usually means the browser
// does not trust the fusou CA yet. A handshake the listener cut (its timeout, or an eviction
// at the connection cap) says nothing about the CA and stays at debug: a flood of stalled
// handshakes must not flood the log.
type goproxyLogger struct{ log *zap.Logger }

func (l goproxyLogger) Printf(format string, v ...any) {
	level := zap.DebugLevel
	if strings.Contains(format, "Cannot handshake client") && !cutByUs(v) {
		level = zap.WarnLevel
	}
	if ce := l.log.Check(level, "goproxy"); ce != nil {
		ce.Write(zap.String("detail", strings.TrimSpace(fmt.Sprintf(format, v...))))
	}
}

// cutByUs reports whether one of args is the error of a connection the proxy closed or
// timed out itself.
func cutByUs(args []any) bool {
	for _, a := range args {
		err, ok := a.(error)
		if !ok {
			continue
		}
		var ne net.Error
		if errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout()) {
			return true
		}
	}
	return false
}
