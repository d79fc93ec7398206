// Command goproxy-plain is the baseline of bench/run.sh: plain goproxy v1.9.3
// MITM with no capture, as a user of the library would wire it.
//
// Every CONNECT is decrypted with a leaf signed by -ca-cert/-ca-key (goproxy's
// own TLSConfigFromCA signer, leaves cached per host through
// ProxyHttpServer.CertStore). Upstream TLS is verified against -upstream-ca.
// The upstream Transport has the same settings as fusou-proxy's (proxy/proxy.go
// newTransport), so that the benchmark compares what fusou-proxy adds to
// goproxy (capture, commit, upload) and not two connection-pool policies;
// goproxy's default Transport skips verification and keeps only two idle
// connections per host. -connect-to rewrites dials, as fusou-proxy's
// proxy.connect_to does.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/fusou-proxy/fusou-proxy/bench/internal/serve"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "goproxy-plain:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "proxy listen address")
	caCert := flag.String("ca-cert", "", "PEM certificate of the MITM CA")
	caKey := flag.String("ca-key", "", "PEM key of the MITM CA")
	upstreamCA := flag.String("upstream-ca", "", "PEM roots that verify upstream servers (empty: system roots)")
	connectTo := flag.String("connect-to", "", "comma-separated HOST:PORT:ADDR:PORT2 dial overrides")
	flag.Parse()

	ca, err := tls.LoadX509KeyPair(*caCert, *caKey)
	if err != nil {
		return fmt.Errorf("load CA: %w", err)
	}
	var roots *x509.CertPool
	if *upstreamCA != "" {
		pem, err := os.ReadFile(*upstreamCA)
		if err != nil {
			return fmt.Errorf("read upstream CA: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("upstream CA %s: no certificate found", *upstreamCA)
		}
	}
	rules, err := parseConnectTo(*connectTo)
	if err != nil {
		return err
	}

	gp := goproxy.NewProxyHttpServer()
	gp.Logger = log.New(io.Discard, "", 0)
	gp.CertStore = &certStore{certs: make(map[string]*tls.Certificate)}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to, ok := rules[addr]; ok {
			addr = to
		}
		return dialer.DialContext(ctx, network, addr)
	}
	gp.Tr = &http.Transport{
		DialContext:           dial,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}
	gp.ConnectDial = func(network, addr string) (net.Conn, error) {
		return dial(context.Background(), network, addr)
	}
	mitm := &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: goproxy.TLSConfigFromCA(&ca)}
	gp.OnRequest().HandleConnect(goproxy.FuncHttpsHandler(
		func(host string, _ *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) { return mitm, host }))

	return serve.UntilSignal(*listen, gp, func(a net.Addr) string { return "listening on " + a.String() })
}

// parseConnectTo reads curl --connect-to style rules into a map from
// "HOST:PORT" to "ADDR:PORT2".
func parseConnectTo(s string) (map[string]string, error) {
	rules := make(map[string]string)
	for r := range strings.SplitSeq(s, ",") {
		if r == "" {
			continue
		}
		f := strings.Split(r, ":")
		if len(f) != 4 {
			return nil, fmt.Errorf("connect-to %q: want HOST:PORT:ADDR:PORT2", r)
		}
		rules[net.JoinHostPort(f[0], f[1])] = net.JoinHostPort(f[2], f[3])
	}
	return rules, nil
}

// certStore caches leaves per host, generating each one once.
type certStore struct {
	mu    sync.Mutex // guards certs; held while generating, so a host is signed once
	certs map[string]*tls.Certificate
}

func (s *certStore) Fetch(host string, gen func() (*tls.Certificate, error)) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.certs[host]; ok {
		return c, nil
	}
	c, err := gen()
	if err != nil {
		return nil, err
	}
	s.certs[host] = c
	return c, nil
}
