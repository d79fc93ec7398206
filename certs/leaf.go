package certs

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"
)

// leafValidity is the longest life of a leaf, NotBefore to NotAfter. 397 days keeps under
// the 398-day cap of the CA/Browser Forum Baseline Requirements §6.3.2, which Apple and
// Chrome enforce for TLS server certificates, so no client refuses a leaf for its length.
const leafValidity = 397 * 24 * time.Hour

// leafRenewBefore is how long before its NotAfter a cached leaf is replaced, so a
// long-running proxy never serves one that is about to expire.
const leafRenewBefore = 24 * time.Hour

// LeafFor returns a certificate for host (a DNS name; a port and trailing dot are ignored),
// signed by the CA, with the chain [leaf, CA] and Leaf set. Leaves are cached; a host's
// leaf is generated once however many callers ask for it at the same time. It fails with
// ErrIPHost for an IP address and ErrHostNotCovered for a host outside the CA's constraints.
func (a *Authority) LeafFor(host string) (*tls.Certificate, error) {
	h, err := normalizeHost(host)
	if err != nil {
		return nil, fmt.Errorf("leaf for %q: %w", host, err)
	}
	if !a.covers(h) {
		return nil, fmt.Errorf("leaf for %q: %w", h, ErrHostNotCovered)
	}
	if c := a.cached(h); c != nil {
		a.hits.Add(1)
		return c, nil
	}
	a.misses.Add(1)

	r := a.root.Load()
	// The flight is per CA too, so a caller after a Reload never gets a leaf of the old one.
	v, err, _ := a.flight.Do(r.cert.SerialNumber.String()+" "+h, func() (any, error) {
		// A flight for h may have finished between our miss and this call; its leaf is
		// in the cache by then, so look again before paying for a key.
		if c := a.cached(h); c != nil {
			return c, nil
		}
		c, err := a.newLeaf(r, h)
		if err != nil {
			return nil, err
		}
		a.generations.Add(1)
		a.mu.Lock()
		if a.root.Load() == r && a.cache.add(h, c) { // not cached if the CA changed meanwhile
			a.evictions.Add(1)
		}
		a.mu.Unlock()
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("leaf for %q: %w", h, err)
	}
	return v.(*tls.Certificate), nil
}

// cached returns h's leaf if it is cached and not close to expiry, marking it recently used.
func (a *Authority) cached(h string) *tls.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.cache.get(h)
	if c == nil || !a.now().Before(c.Leaf.NotAfter.Add(-leafRenewBefore)) {
		return nil
	}
	return c
}

// newLeaf makes a key and a certificate for h, which the caller has normalised and checked.
func (a *Authority) newLeaf(r *root, h string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notBefore := a.now().Add(-clockSkew)
	notAfter := notBefore.Add(leafValidity)
	// A leaf outliving its CA would be refused by some clients; end with the CA instead.
	if notAfter.After(r.cert.NotAfter) {
		notAfter = r.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: h, Organization: []string{"fusou-proxy"}},
		DNSNames:              []string{h},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	return sign(r, tmpl, key)
}

// sign issues tmpl for key's public half with the CA key and wraps it for crypto/tls.
func sign(r *root, tmpl *x509.Certificate, key *ecdsa.PrivateKey) (*tls.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, &key.PublicKey, r.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{der, r.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// lru is a fixed-size least-recently-used map from host to leaf. It is not safe for
// concurrent use; Authority.mu guards it.
type lru struct {
	size  int
	order *list.List               // of *lruEntry, most recently used at the front
	items map[string]*list.Element // host → element in order
}

type lruEntry struct {
	host string
	cert *tls.Certificate
}

func newLRU(size int) *lru {
	return &lru{size: size, order: list.New(), items: make(map[string]*list.Element)}
}

func (l *lru) get(host string) *tls.Certificate {
	e, ok := l.items[host]
	if !ok {
		return nil
	}
	l.order.MoveToFront(e)
	return e.Value.(*lruEntry).cert
}

// add stores cert for host, replacing any older leaf, and reports whether the least
// recently used entry was dropped to make room.
func (l *lru) add(host string, cert *tls.Certificate) (evicted bool) {
	if e, ok := l.items[host]; ok {
		e.Value.(*lruEntry).cert = cert
		l.order.MoveToFront(e)
		return false
	}
	l.items[host] = l.order.PushFront(&lruEntry{host: host, cert: cert})
	if l.order.Len() <= l.size {
		return false
	}
	oldest := l.order.Back()
	l.order.Remove(oldest)
	delete(l.items, oldest.Value.(*lruEntry).host)
	return true
}

func (l *lru) len() int { return l.order.Len() }
