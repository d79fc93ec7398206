// Command loadgen is the load generator of bench/run.sh and bench/soak.sh.
// It does what hey does (a fixed number of keep-alive HTTP/1.1 connections,
// each running requests back to back, a latency histogram) and what hey
// cannot: a URL that changes with every request, so that each request asks
// for a distinct asset, and client aborts mid-body.
//
// In -url, "{n}" is replaced by a request counter (eight digits, from 1).
// -proxy sends every request through an HTTP proxy (CONNECT for https);
// -connect dials a fixed address instead of the URL's host, keeping the
// URL's host for SNI and the Host header (curl's --connect-to), for the
// direct runs. Before timing, each connection is opened by one request.
// The result is one JSON line on standard output.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what a run reports, as JSON.
type Result struct {
	Requests int64   `json:"requests"` // completed requests (errors included)
	Errors   int64   `json:"errors"`
	Aborted  int64   `json:"aborted"` // requests closed mid-body on purpose (-abort)
	Bytes    int64   `json:"bytes"`   // body bytes read
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"` // successful requests per second
	P50ms    float64 `json:"p50_ms"`
	P90ms    float64 `json:"p90_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	FirstErr string  `json:"first_error,omitempty"`
}

type options struct {
	url, method, body string
	proxy, connect    string
	caFiles           string
	conns             int
	duration          time.Duration
	requests          int64
	rate              float64
	abort             bool
	expectSize        int64
	timeout           time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "", "request URL; {n} is replaced by the request counter")
	flag.StringVar(&o.method, "method", http.MethodGet, "request method")
	flag.StringVar(&o.body, "body", "", "request body")
	flag.StringVar(&o.proxy, "proxy", "", "HTTP proxy host:port")
	flag.StringVar(&o.connect, "connect", "", "dial this host:port instead of the URL's (no proxy)")
	flag.StringVar(&o.caFiles, "ca", "", "comma-separated PEM files of the roots to trust (required for https)")
	flag.IntVar(&o.conns, "c", 16, "concurrent connections")
	flag.DurationVar(&o.duration, "d", 10*time.Second, "how long to run (0: until -n)")
	flag.Int64Var(&o.requests, "n", 0, "stop after this many requests (0: until -d)")
	flag.Float64Var(&o.rate, "rate", 0, "total requests per second (0: as fast as possible)")
	flag.BoolVar(&o.abort, "abort", false, "read half of each body, then close the connection")
	flag.Int64Var(&o.expectSize, "size", -1, "expected body size; another size counts as an error (-1: any)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "per-request timeout")
	flag.Parse()
	res, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func run(o options) (*Result, error) {
	if o.url == "" || o.conns < 1 || (o.duration <= 0 && o.requests <= 0) {
		return nil, errors.New("need -url, -c >= 1, and -d or -n")
	}
	client, err := newClient(o)
	if err != nil {
		return nil, err
	}
	g := &gen{o: o, client: client}

	// Open every connection before timing (TLS handshakes, MITM leaves).
	var warm sync.WaitGroup
	var warmErr atomic.Value
	for range o.conns {
		warm.Go(func() {
			if _, err := g.one(context.Background()); err != nil {
				warmErr.CompareAndSwap(nil, err.Error())
			}
		})
	}
	warm.Wait()
	if e := warmErr.Load(); e != nil {
		return nil, fmt.Errorf("warm-up: %s", e)
	}

	ctx := context.Background()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	hists := make([]*histogram, o.conns)
	start := time.Now()
	g.start = start
	var wg sync.WaitGroup
	for i := range hists {
		h := new(histogram)
		hists[i] = h
		wg.Go(func() { g.worker(ctx, h) })
	}
	wg.Wait()
	elapsed := time.Since(start)

	var all histogram
	for _, h := range hists {
		all.merge(h)
	}
	r := &Result{
		Requests: g.done.Load(),
		Errors:   g.errs.Load(),
		Aborted:  g.aborted.Load(),
		Bytes:    g.bytes.Load(),
		Seconds:  elapsed.Seconds(),
		P50ms:    all.quantile(0.50),
		P90ms:    all.quantile(0.90),
		P99ms:    all.quantile(0.99),
		MaxMs:    float64(all.max) / 1e6,
	}
	r.RPS = float64(all.n) / elapsed.Seconds()
	if e := g.firstErr.Load(); e != nil {
		r.FirstErr = e.(string)
	}
	return r, nil
}

func newClient(o options) (*http.Client, error) {
	tlsConf := &tls.Config{}
	if o.caFiles != "" {
		pool := x509.NewCertPool()
		for f := range strings.SplitSeq(o.caFiles, ",") {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read CA: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA %s: no certificate", f)
			}
		}
		tlsConf.RootCAs = pool
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsConf,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
		DisableCompression:  true,
		MaxConnsPerHost:     o.conns,
		MaxIdleConns:        o.conns,
		MaxIdleConnsPerHost: o.conns,
		IdleConnTimeout:     90 * time.Second,
	}
	switch {
	case o.proxy != "" && o.connect != "":
		return nil, errors.New("-proxy and -connect exclude each other")
	case o.proxy != "":
		u, err := url.Parse("http://" + o.proxy)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		tr.Proxy = http.ProxyURL(u)
	case o.connect != "":
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, o.connect)
		}
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       o.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// gen is one run's shared state.
type gen struct {
	o      options
	client *http.Client
	start  time.Time

	seq                        atomic.Int64 // URL counter, warm-up included
	issued                     atomic.Int64 // timed requests started (-n)
	done, errs, aborted, bytes atomic.Int64
	firstErr                   atomic.Value // string
	pacing                     atomic.Int64 // requests paced so far (-rate)
}

func (g *gen) worker(ctx context.Context, h *histogram) {
	for ctx.Err() == nil {
		if g.o.requests > 0 && g.issued.Add(1) > g.o.requests {
			return
		}
		if g.o.rate > 0 {
			k := g.pacing.Add(1)
			at := g.start.Add(time.Duration(float64(k) / g.o.rate * float64(time.Second)))
			t := time.NewTimer(time.Until(at))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		t0 := time.Now()
		ok, err := g.one(context.Background())
		g.done.Add(1)
		if err != nil {
			g.errs.Add(1)
			g.firstErr.CompareAndSwap(nil, err.Error())
			continue
		}
		if ok {
			h.add(time.Since(t0))
		}
	}
}

// one runs one request. It reports whether the request was read to its end
// (false for a deliberate abort).
func (g *gen) one(ctx context.Context) (bool, error) {
	n := g.seq.Add(1)
	u := strings.ReplaceAll(g.o.url, "{n}", fmt.Sprintf("%08d", n))
	var body io.Reader
	if g.o.body != "" {
		body = strings.NewReader(g.o.body)
	}
	req, err := http.NewRequestWithContext(ctx, g.o.method, u, body)
	if err != nil {
		return false, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if g.o.abort && resp.ContentLength > 1 {
		nb, err := io.CopyN(io.Discard, resp.Body, resp.ContentLength/2)
		g.bytes.Add(nb)
		g.aborted.Add(1)
		return false, err // Close before EOF drops the connection
	}
	nb, err := io.Copy(io.Discard, resp.Body)
	g.bytes.Add(nb)
	if err != nil {
		return false, err
	}
	if resp.StatusCode/100 != 2 {
		return false, fmt.Errorf("%s: status %d", req.URL.Path, resp.StatusCode)
	}
	if g.o.expectSize >= 0 && nb != g.o.expectSize {
		return false, fmt.Errorf("%s: %d bytes, want %d", req.URL.Path, nb, g.o.expectSize)
	}
	return true, nil
}

// histogram counts latencies in buckets 1 % wide, from 1 µs.
type histogram struct {
	counts []int64
	n      int64
	max    time.Duration
}

const bucketGrowth = 1.01

func (h *histogram) add(d time.Duration) {
	us := float64(d) / 1e3
	i := 0
	if us > 1 {
		i = int(math.Log(us) / math.Log(bucketGrowth))
	}
	for len(h.counts) <= i {
		h.counts = append(h.counts, 0)
	}
	h.counts[i]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for len(h.counts) < len(o.counts) {
		h.counts = append(h.counts, 0)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile in milliseconds (the upper edge of its
// bucket), 0 with no samples.
func (h *histogram) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return math.Pow(bucketGrowth, float64(i+1)) / 1e3
		}
	}
	return float64(h.max) / 1e6
}
