package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// verify checks leaf against a's CA as the only root, as a browser that trusts it would.
func verify(a *Authority, leaf *x509.Certificate, dnsName string) error {
	roots := x509.NewCertPool()
	roots.AddCert(a.Certificate())
	_, err := leaf.Verify(x509.VerifyOptions{
		DNSName:     dnsName,
		Roots:       roots,
		CurrentTime: time.Now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}

// signDirect signs a leaf with the CA key, skipping LeafFor's host checks, the way an
// attacker holding a leaked key would.
func signDirect(t *testing.T, a *Authority, dnsNames []string, ips []net.IP) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	cn := "leaked"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	c, err := sign(a.root.Load(), &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func TestNameConstraints(t *testing.T) {
	a := mustOpen(t, Options{})

	refused := []struct {
		name     string
		dnsNames []string
		ips      []net.IP
		verifyAs string
	}{
		{"other site", []string{"example.com"}, nil, "example.com"},
		{"other site, no DNSName in verify", []string{"example.com"}, nil, ""},
		{"suffix look-alike", []string{"evilkancolle-server.com"}, nil, "evilkancolle-server.com"},
		{"mitm host plus other site", []string{"kancolle-server.com", "example.com"}, nil, "kancolle-server.com"},
		{"ipv4 SAN", nil, []net.IP{net.ParseIP("127.0.0.1")}, "127.0.0.1"},
		{"ipv4 SAN, no DNSName in verify", nil, []net.IP{net.ParseIP("203.0.113.7")}, ""},
		{"ipv6 SAN", nil, []net.IP{net.ParseIP("::1")}, "::1"},
		{"mitm host plus ip", []string{"kancolle-server.com"}, []net.IP{net.ParseIP("10.0.0.1")}, "kancolle-server.com"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			err := verify(a, signDirect(t, a, tc.dnsNames, tc.ips), tc.verifyAs)
			var inv x509.CertificateInvalidError
			if !errors.As(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
				t.Fatalf("verify: %v, want a name constraint violation", err)
			}
		})
	}

	for _, host := range []string{"kancolle-server.com", "w01y.kancolle-server.com", "a.b.kancolle-server.com"} {
		t.Run("allowed "+host, func(t *testing.T) {
			// Signed directly and through LeafFor: both must verify for a permitted name.
			if err := verify(a, signDirect(t, a, []string{host}, nil), host); err != nil {
				t.Errorf("direct leaf: %v", err)
			}
			c, err := a.LeafFor(host)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify(a, c.Leaf, host); err != nil {
				t.Errorf("LeafFor leaf: %v", err)
			}
		})
	}
}

func TestLeafFor_Certificate(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := mustOpen(t, Options{Now: func() time.Time { return now }})
	c, err := a.LeafFor("W01Y.kancolle-server.com:443")
	if err != nil {
		t.Fatal(err)
	}
	l := c.Leaf
	if l == nil {
		t.Fatal("Leaf not set")
	}
	if len(c.Certificate) != 2 || string(c.Certificate[0]) != string(l.Raw) || string(c.Certificate[1]) != string(a.DER()) {
		t.Error("chain is not [leaf, CA]")
	}
	if len(l.DNSNames) != 1 || l.DNSNames[0] != "w01y.kancolle-server.com" || l.Subject.CommonName != "w01y.kancolle-server.com" {
		t.Errorf("SAN %v CN %q", l.DNSNames, l.Subject.CommonName)
	}
	if len(l.IPAddresses) != 0 || l.IsCA {
		t.Errorf("leaf has IPs %v or IsCA %v", l.IPAddresses, l.IsCA)
	}
	pub, ok := l.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("leaf key %T, want ecdsa p-256", l.PublicKey)
	}
	priv, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !priv.PublicKey.Equal(l.PublicKey) {
		t.Error("private key does not match the leaf")
	}
	if len(l.ExtKeyUsage) != 1 || l.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ext key usage %v", l.ExtKeyUsage)
	}
	if !l.NotBefore.Before(now) || l.NotBefore.Before(now.Add(-2*time.Hour)) {
		t.Errorf("NotBefore %v, want a little before %v", l.NotBefore, now)
	}
	if d := l.NotAfter.Sub(l.NotBefore); d > 397*24*time.Hour || d < 396*24*time.Hour {
		t.Errorf("validity %v, want about 397 days and no more", d)
	}
	if err := l.CheckSignatureFrom(a.Certificate()); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}
}

func TestLeafFor_NotOutlivingCA(t *testing.T) {
	start := time.Now()
	var clock struct {
		sync.Mutex
		t time.Time
	}
	clock.t = start
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.t }
	a := mustOpen(t, Options{Now: now})

	clock.Lock()
	clock.t = a.Certificate().NotAfter.AddDate(0, 0, -100)
	clock.Unlock()
	c, err := a.LeafFor("kancolle-server.com")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Leaf.NotAfter.Equal(a.Certificate().NotAfter) {
		t.Errorf("leaf ends %v, CA ends %v", c.Leaf.NotAfter, a.Certificate().NotAfter)
	}
}

func TestLeafFor_Hosts(t *testing.T) {
	a := mustOpen(t, Options{})
	same, err := a.LeafFor("kancolle-server.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		want error // nil: the cached leaf for kancolle-server.com
	}{
		{"kancolle-server.com", nil},
		{"KanColle-Server.COM", nil},
		{"kancolle-server.com.", nil},
		{"kancolle-server.com:443", nil},
		{"Kancolle-Server.com.:8443", nil},
		{"127.0.0.1", ErrIPHost},
		{"127.0.0.1:443", ErrIPHost},
		{"::1", ErrIPHost},
		{"[::1]:443", ErrIPHost},
		{"[2001:db8::1]", ErrIPHost},
		{"fe80::1%eth0", ErrIPHost},
		{"example.com", ErrHostNotCovered},
		{"evilkancolle-server.com", ErrHostNotCovered},
		{"kancolle-server.com.evil.test", ErrHostNotCovered},
		{"", ErrInvalidHost},
		{"*.kancolle-server.com", ErrInvalidHost},
		{"a..kancolle-server.com", ErrInvalidHost},
		{"a b.kancolle-server.com", ErrInvalidHost},
		{"-a.kancolle-server.com", ErrInvalidHost},
	} {
		t.Run(tc.host, func(t *testing.T) {
			c, err := a.LeafFor(tc.host)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("error %v, want %v", err, tc.want)
				}
				if a.Covers(tc.host) {
					t.Error("Covers reports true for a refused host")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c != same {
				t.Error("normalised host did not hit the cached leaf")
			}
			if !a.Covers(tc.host) {
				t.Error("Covers reports false for a served host")
			}
		})
	}
	if st := a.Stats(); st.Generations != 1 {
		t.Errorf("%d generations, want 1", st.Generations)
	}
}

func TestLeafFor_CachedHitsDoNotGenerate(t *testing.T) {
	a := mustOpen(t, Options{})
	first, err := a.LeafFor("w01y.kancolle-server.com")
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		c, err := a.LeafFor("w01y.kancolle-server.com")
		if err != nil {
			t.Fatal(err)
		}
		if c != first {
			t.Fatal("hit returned a different leaf")
		}
	}
	st := a.Stats()
	if st.Generations != 1 || st.Misses != 1 || st.Hits != 10 || st.Cached != 1 {
		t.Errorf("stats %+v, want 1 generation, 1 miss, 10 hits, 1 cached", st)
	}
}

func TestLeafFor_SingleFlight(t *testing.T) {
	const callers, hosts = 200, 50
	a := mustOpen(t, Options{CacheSize: 64})
	start := make(chan struct{})
	got := make([]*tls.Certificate, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i], errs[i] = a.LeafFor(fmt.Sprintf("h%d.kancolle-server.com", i%hosts))
		}()
	}
	close(start)
	wg.Wait()

	byHost := map[int]*tls.Certificate{}
	for i, c := range got {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if prev, ok := byHost[i%hosts]; ok && prev != c {
			t.Errorf("host h%d: callers got different leaves", i%hosts)
		}
		byHost[i%hosts] = c
	}
	st := a.Stats()
	if st.Generations != hosts {
		t.Errorf("%d generations for %d hosts, want exactly %d", st.Generations, hosts, hosts)
	}
	if st.Hits+st.Misses != callers || st.Cached != hosts || st.Evictions != 0 {
		t.Errorf("stats %+v, want hits+misses=%d, cached=%d, no evictions", st, callers, hosts)
	}
}

func TestLeafFor_LRU(t *testing.T) {
	a := mustOpen(t, Options{CacheSize: 3})
	leaf := func(h string) *tls.Certificate {
		t.Helper()
		c, err := a.LeafFor(h + ".kancolle-server.com")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	la := leaf("a")
	leaf("b")
	leaf("c")
	if leaf("a") != la { // a is now the most recently used; b the least
		t.Fatal("a was not cached")
	}
	leaf("d") // evicts b
	st := a.Stats()
	if st.Cached != 3 || st.Evictions != 1 || st.Generations != 4 {
		t.Fatalf("stats %+v, want 3 cached, 1 eviction, 4 generations", st)
	}
	if leaf("a") != la {
		t.Error("recently used a was evicted")
	}
	if got := a.Stats().Generations; got != 4 {
		t.Errorf("hit on a generated: %d generations", got)
	}
	leaf("b") // evicted, so generated again; evicts c
	if st := a.Stats(); st.Generations != 5 || st.Evictions != 2 || st.Cached != 3 {
		t.Errorf("stats %+v after re-asking for evicted b, want 5 generations, 2 evictions", st)
	}
}

func TestLeafFor_RenewsNearExpiry(t *testing.T) {
	var clock struct {
		sync.Mutex
		t time.Time
	}
	clock.t = time.Now()
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.t }
	a := mustOpen(t, Options{Now: now})
	first, err := a.LeafFor("kancolle-server.com")
	if err != nil {
		t.Fatal(err)
	}
	clock.Lock()
	clock.t = first.Leaf.NotAfter.Add(-time.Hour)
	clock.Unlock()
	second, err := a.LeafFor("kancolle-server.com")
	if err != nil {
		t.Fatal(err)
	}
	if second == first || !second.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Error("a leaf about to expire was served from the cache")
	}
	if st := a.Stats(); st.Generations != 2 || st.Cached != 1 {
		t.Errorf("stats %+v, want 2 generations, 1 cached", st)
	}
}

// TestTLSHandshake runs a real crypto/tls server on loopback with the Authority as its
// certificate source and a client that trusts only the CA.
func TestTLSHandshake(t *testing.T) {
	a := mustOpen(t, Options{})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: a.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { ln.Close() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			// A refused handshake is part of the test; the client reports it.
			if err := conn.(*tls.Conn).Handshake(); err == nil {
				_, _ = io.WriteString(conn, "ok")
			}
			conn.Close()
		}
	}()

	roots := x509.NewCertPool()
	roots.AddCert(a.Certificate())
	dial := func(serverName string) (string, *tls.ConnectionState, error) {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: serverName})
		if err != nil {
			return "", nil, err
		}
		defer conn.Close()
		b, err := io.ReadAll(conn)
		cs := conn.ConnectionState()
		return string(b), &cs, err
	}

	for _, host := range []string{"kancolle-server.com", "w01y.kancolle-server.com"} {
		body, cs, err := dial(host)
		if err != nil {
			t.Fatalf("handshake as %s: %v", host, err)
		}
		if body != "ok" {
			t.Errorf("read %q, want ok", body)
		}
		if n := len(cs.PeerCertificates); n != 2 || cs.PeerCertificates[0].DNSNames[0] != host {
			t.Errorf("%s: server sent %d certificates", host, n)
		}
	}
	if _, _, err := dial("example.com"); err == nil {
		t.Error("handshake for a host outside mitm_hosts succeeded")
	}
	// A client that does not trust the CA must refuse the proxy's leaf.
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "kancolle-server.com"})
	if err == nil {
		conn.Close()
		t.Error("handshake without the CA as a root succeeded")
	}
	if st := a.Stats(); st.Generations != 2 {
		t.Errorf("%d generations for 2 hosts", st.Generations)
	}
}
