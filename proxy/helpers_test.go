package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// gameHost is the MITM'd host the tests talk to; a dial rule sends it to a local server.
const gameHost = "w01y.kancolle-server.com"

// waitTimeout bounds every wait on the proxy's asynchronous behaviour.
const waitTimeout = 10 * time.Second

// testCA is a throw-away certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // guarded by mu
	calls  atomic.Int64
}

func newTestCA(tb testing.TB, name string) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, leaves: map[string]*tls.Certificate{}}
}

// leaf signs a server certificate for hosts (DNS names or IPs).
func (ca *testCA) leaf(tb testing.TB, hosts ...string) *tls.Certificate {
	tb.Helper()
	c, err := ca.sign(hosts...)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func (ca *testCA) sign(hosts ...string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(mrand.Int64()),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// LeafFor makes testCA a CertSource, caching one leaf per host as certs.Authority does.
func (ca *testCA) LeafFor(host string) (*tls.Certificate, error) {
	ca.calls.Add(1)
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c, ok := ca.leaves[host]; ok {
		return c, nil
	}
	c, err := ca.sign(host)
	if err != nil {
		return nil, err
	}
	ca.leaves[host] = c
	return c, nil
}

var _ CertSource = (*testCA)(nil)

// captured is one finished capture seen by recordingSink.
type captured struct {
	URL      string
	Body     []byte
	Complete bool
}

// recordingSink keeps every capture in memory. Its function fields let a test make Start,
// Write or Finish misbehave.
type recordingSink struct {
	started atomic.Int64
	done    chan captured

	// Optional hooks, set before traffic starts.
	OnStart  func(req *http.Request, resp *http.Response) // may panic
	OnWrite  func(p []byte) error                         // may panic or fail
	OnFinish func(complete bool)                          // may panic
}

func newRecordingSink() *recordingSink {
	return &recordingSink{done: make(chan captured, 256)}
}

func (s *recordingSink) Start(req *http.Request, resp *http.Response) Spool {
	if s.OnStart != nil {
		s.OnStart(req, resp)
	}
	s.started.Add(1)
	return &recordingSpool{sink: s, url: req.URL.String()}
}

var _ Sink = (*recordingSink)(nil)

// next waits for the next finished capture.
func (s *recordingSink) next(tb testing.TB) captured {
	tb.Helper()
	select {
	case c := <-s.done:
		return c
	case <-time.After(waitTimeout):
		tb.Fatal("no capture finished in time")
		return captured{}
	}
}

// none checks that no capture has finished.
func (s *recordingSink) none(tb testing.TB) {
	tb.Helper()
	select {
	case c := <-s.done:
		tb.Fatalf("unexpected capture of %s (complete=%v)", c.URL, c.Complete)
	default:
	}
}

type recordingSpool struct {
	sink     *recordingSink
	url      string
	buf      bytes.Buffer
	finished bool
}

func (sp *recordingSpool) Write(p []byte) (int, error) {
	if sp.finished {
		panic("Write after Finish")
	}
	if sp.sink.OnWrite != nil {
		if err := sp.sink.OnWrite(p); err != nil {
			return 0, err
		}
	}
	return sp.buf.Write(p)
}

func (sp *recordingSpool) Finish(complete bool) {
	if sp.finished {
		panic("Finish called twice")
	}
	sp.finished = true
	if sp.sink.OnFinish != nil {
		sp.sink.OnFinish(complete)
	}
	sp.sink.done <- captured{URL: sp.url, Body: sp.buf.Bytes(), Complete: complete}
}

// harness is a proxy behind an httptest frontend, with the CA its leaves come from.
type harness struct {
	proxy  *Proxy
	front  *httptest.Server
	mitmCA *testCA
	sink   *recordingSink
	logs   *observer.ObservedLogs
}

// testRules are the capture rules of most tests: the game's prefixes, with /kcs covering
// /kcsapi/ so that the skip rule is what keeps the API out.
func testRules() CaptureRules {
	return CaptureRules{
		Enable:           true,
		PathPrefixes:     []string{"/kcs", "/gadget_html5/"},
		SkipPathPrefixes: []string{"/kcsapi/"},
		MaxAssetBytes:    1 << 20,
	}
}

// newHarness starts a proxy MITM'ing kancolle-server.com whose upstream roots are
// upstreamRoots. edit may change the options before New.
func newHarness(tb testing.TB, upstreamRoots *x509.CertPool, rules []DialRule, edit func(*Options)) *harness {
	tb.Helper()
	core, logs := observer.New(zap.DebugLevel)
	h := &harness{mitmCA: newTestCA(tb, "fusou test CA"), sink: newRecordingSink(), logs: logs}
	o := Options{
		MITMHosts:     []string{"kancolle-server.com"},
		DialRules:     rules,
		UpstreamRoots: upstreamRoots,
		Certs:         h.mitmCA,
		Sink:          h.sink,
		Capture:       testRules(),
		Logger:        zap.New(core),
	}
	if edit != nil {
		edit(&o)
	}
	p, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	h.proxy = p
	h.front = httptest.NewServer(p)
	h.front.Config.ErrorLog = log.New(io.Discard, "", 0)
	tb.Cleanup(func() {
		h.front.Close()
		p.CloseIdleConnections()
	})
	return h
}

// client is an http.Client using the proxy and trusting the MITM CA plus extra roots.
func (h *harness) client(tb testing.TB, extra ...*x509.Certificate) *http.Client {
	tb.Helper()
	tr := h.transport(extra...)
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (h *harness) transport(extra ...*x509.Certificate) *http.Transport {
	roots := x509.NewCertPool()
	roots.AddCert(h.mitmCA.cert)
	for _, c := range extra {
		roots.AddCert(c)
	}
	u, _ := url.Parse(h.front.URL)
	return &http.Transport{
		Proxy:              http.ProxyURL(u),
		TLSClientConfig:    &tls.Config{RootCAs: roots},
		DisableCompression: true,
	}
}

// startTLSServer starts an HTTPS server on 127.0.0.1 presenting cert. It counts the
// connections it accepts.
func startTLSServer(tb testing.TB, cert *tls.Certificate, h http.Handler) (*httptest.Server, *atomic.Int64) {
	tb.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	return startCounting(tb, srv, true)
}

func startHTTPServer(tb testing.TB, h http.Handler) (*httptest.Server, *atomic.Int64) {
	tb.Helper()
	return startCounting(tb, httptest.NewUnstartedServer(h), false)
}

func startCounting(tb testing.TB, srv *httptest.Server, useTLS bool) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	tb.Cleanup(srv.Close)
	return srv, &conns
}

// ruleTo maps host:port to the server's local address.
func ruleTo(tb testing.TB, host, port string, srv *httptest.Server) DialRule {
	tb.Helper()
	u, err := url.Parse(srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	return DialRule{Host: host, Port: port, ToHost: u.Hostname(), ToPort: u.Port()}
}

// assetBytes is a deterministic, incompressible body of n bytes.
func assetBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

func mustURL(tb testing.TB, s string) *url.URL {
	tb.Helper()
	u, err := url.Parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readAll reads a response body and closes it.
func readAll(tb testing.TB, resp *http.Response) []byte {
	tb.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body: %v", err)
	}
	return b
}

// errPlanned is the error a test makes a component return.
var errPlanned = errors.New("planned failure")
