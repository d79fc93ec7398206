// Package certs owns fusou-proxy's per-install root CA and the leaf certificates it signs
// for the hosts the proxy decrypts (SPEC §2, §10).
//
// Start with [Open]: it loads the CA from its folder, or makes one on first use, and checks
// that it covers every mitm_hosts domain. [Authority.LeafFor] (or [Authority.GetCertificate]
// as a tls.Config hook) then serves a leaf per host from a bounded LRU cache, generating each
// host's key once however many connections ask at the same time. [Rotate] replaces the CA,
// keeping the old files aside.
//
// The CA carries critical Name Constraints: it may only sign the mitm_hosts domains (and
// their subdomains) and no IP address at all, so a leaked key cannot be used to impersonate
// any other site. The private key never leaves the CA folder and is never logged.
//
// The CA folder's fusou-ca.pem marks a complete CA: it is written last. A folder with a
// stray key but no certificate (a crash during the first start) gets a new CA, the stray
// files kept aside like a rotation's. Rotate changes the files only: a running proxy keeps
// its Authority, and so the old CA, until it restarts. Two processes making the first CA at
// the same moment are not guarded against; a resulting key/certificate mismatch is caught
// by the next Open, which asks for a rotation.
package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// DefaultCacheSize is the number of leaf certificates kept when Options.CacheSize is zero.
// A game session touches a handful of hosts, so this is generous.
const DefaultCacheSize = 1024

// DefaultHosts are the domains the CA covers when Options.Hosts is empty: the
// proxy.mitm_hosts default (SPEC §3).
var DefaultHosts = []string{"kancolle-server.com"}

// File names inside the CA folder (SPEC §2).
const (
	CertFile    = "fusou-ca.pem"
	CertDERFile = "fusou-ca.der"
	KeyFile     = "fusou-ca-key.pem"
)

// Errors returned by LeafFor and Open.
var (
	// ErrIPHost is returned for an IP address host: the CA excludes every IP range, so no
	// client would accept a leaf for one.
	ErrIPHost = errors.New("ip hosts are not supported: the ca excludes all ip addresses")

	// ErrHostNotCovered is returned for a host outside the CA's permitted domains: a leaf
	// for it would fail verification in every client.
	ErrHostNotCovered = errors.New("host not covered by the ca's name constraints")

	// ErrInvalidHost is returned for a host that is not a DNS name.
	ErrInvalidHost = errors.New("invalid host name")
)

// RotateRequiredError says that the CA on disk cannot be used as it is and that
// `fusou-proxy ca rotate` will fix it: the CA does not cover a mitm_hosts domain, has
// expired, or one of its files is missing or corrupt. Callers branch on it with errors.As.
type RotateRequiredError struct {
	Dir    string   // the CA folder
	Reason string   // what is wrong, e.g. "does not cover mitm_hosts [example.com]"
	Hosts  []string // the mitm_hosts domains the CA does not cover, if that is the reason
	Err    error    // the underlying error, if any
}

func (e *RotateRequiredError) Error() string {
	msg := fmt.Sprintf("ca in %s %s", e.Dir, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg + "; run `fusou-proxy ca rotate` to make a new ca (the old files are kept aside)"
}

func (e *RotateRequiredError) Unwrap() error { return e.Err }

// Options configures Open and Rotate.
type Options struct {
	// Dir is the CA folder, normally <data_dir>/ca. Required. It is made private: 0700, an
	// owner-only ACL on Windows.
	Dir string

	// Hosts are the proxy.mitm_hosts domains: the CA permits them and their subdomains.
	// Empty means DefaultHosts.
	Hosts []string

	// CacheSize bounds the leaf cache. Zero or less means DefaultCacheSize.
	CacheSize int

	// Logger receives lifecycle events (CA created, loaded, rotated). Nil means zap.NewNop().
	Logger *zap.Logger

	// Now is the clock used for validity periods. Nil means time.Now.
	Now func() time.Time
}

// Stats counts leaf cache activity, for metrics. Hits+Misses is the number of successful
// LeafFor lookups; Generations is the number of leaf keys made, which single-flight keeps at
// one per host per cache lifetime however many callers miss together.
type Stats struct {
	Hits        uint64 // served from the cache
	Misses      uint64 // not in the cache when asked (the caller generated or waited)
	Generations uint64 // leaves made
	Evictions   uint64 // leaves dropped because the cache was full
	Cached      int    // leaves in the cache now
}

// Authority is a loaded CA and its leaf cache. It is safe for concurrent use.
type Authority struct {
	dir    string
	root   atomic.Pointer[root] // the CA in use; Reload swaps it
	now    func() time.Time
	logger *zap.Logger

	flight singleflight.Group

	mu        sync.Mutex // guards cache
	cache     *lru
	cacheSize int

	hits, misses, generations, evictions atomic.Uint64
}

// root is a CA certificate with its key, as one value so that a reload swaps both at once.
type root struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newRoot(cert *x509.Certificate, key *ecdsa.PrivateKey) *root {
	return &root{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}
}

// Open loads the CA from o.Dir, or makes one for o.Hosts if the folder holds none. It fails
// with a *RotateRequiredError if the CA on disk does not cover every host in o.Hosts, has
// expired, or is damaged.
func Open(o Options) (*Authority, error) {
	hosts, err := o.hosts()
	if err != nil {
		return nil, err
	}
	if err := ensureDir(o.Dir); err != nil {
		return nil, err
	}
	removeTempFiles(o.Dir, o.logger())

	cert, key, err := load(o.Dir, o.logger(), o.now())
	if errors.Is(err, errNoCA) {
		return create(o, hosts)
	} else if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}

	a := o.newAuthority(cert, key)
	var uncovered []string
	for _, h := range hosts {
		if !a.Covers(h) {
			uncovered = append(uncovered, h)
		}
	}
	if len(uncovered) > 0 {
		return nil, &RotateRequiredError{
			Dir:    o.Dir,
			Reason: fmt.Sprintf("does not cover mitm_hosts %v (it permits %v)", uncovered, cert.PermittedDNSDomains),
			Hosts:  uncovered,
		}
	}
	a.logger.Info("Loaded CA", caFields(o.Dir, cert)...)
	return a, nil
}

// Rotate makes a new CA for o.Hosts. Any CA files already in o.Dir are moved, never deleted,
// into a folder ca/old-<UTC time>/. The new Authority starts with an empty leaf cache; a
// running proxy keeps serving the old CA until it restarts.
func Rotate(o Options) (*Authority, error) {
	hosts, err := o.hosts()
	if err != nil {
		return nil, err
	}
	if err := ensureDir(o.Dir); err != nil {
		return nil, err
	}
	removeTempFiles(o.Dir, o.logger())
	return create(o, hosts)
}

// create makes a new CA, moves any old files aside and writes the new ones.
func create(o Options, hosts []string) (*Authority, error) {
	cert, key, err := newCA(hosts, o.now())
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	old, err := moveAside(o.Dir, o.now())
	if err != nil {
		return nil, fmt.Errorf("keep old ca: %w", err)
	}
	if err := writeCA(o.Dir, cert, key); err != nil {
		return nil, fmt.Errorf("write ca: %w", err)
	}
	a := o.newAuthority(cert, key)
	fields := caFields(o.Dir, cert)
	if old != "" {
		fields = append(fields, zap.String("old", old))
	}
	a.logger.Info("Created CA", fields...)
	return a, nil
}

func (o Options) newAuthority(cert *x509.Certificate, key *ecdsa.PrivateKey) *Authority {
	size := o.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	a := &Authority{dir: o.Dir, now: o.now, logger: o.logger(), cache: newLRU(size), cacheSize: size}
	a.root.Store(newRoot(cert, key))
	return a
}

func (o Options) logger() *zap.Logger {
	if o.Logger == nil {
		return zap.NewNop()
	}
	return o.Logger
}

func (o Options) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// hosts returns the normalised, de-duplicated mitm_hosts, without domains that another
// entry already covers.
func (o Options) hosts() ([]string, error) {
	if o.Dir == "" {
		return nil, errors.New("no ca folder given")
	}
	in := o.Hosts
	if len(in) == 0 {
		in = DefaultHosts
	}
	var out []string
	for _, raw := range in {
		h, err := normalizeHost(raw)
		if err != nil {
			return nil, fmt.Errorf("check mitm host %q: %w", raw, err)
		}
		out = append(out, h)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	return slices.DeleteFunc(slices.Clone(out), func(h string) bool {
		return slices.ContainsFunc(out, func(d string) bool { return d != h && underDomain(h, d) })
	}), nil
}

// Certificate returns the CA certificate. The caller must not modify it.
func (a *Authority) Certificate() *x509.Certificate { return a.root.Load().cert }

// PEM returns the CA certificate in PEM form, as in fusou-ca.pem.
func (a *Authority) PEM() []byte { return slices.Clone(a.root.Load().pem) }

// DER returns the CA certificate in DER form, as in fusou-ca.der.
func (a *Authority) DER() []byte { return slices.Clone(a.Certificate().Raw) }

// RotationAdvice says why the CA should be replaced with `fusou-proxy ca rotate`, or "" when
// it need not be. A CA made before the root carried Extended Key Usage serverAuth keeps
// working; a new one is narrower.
func (a *Authority) RotationAdvice() string {
	eku := a.Certificate().ExtKeyUsage
	if len(eku) != 1 || eku[0] != x509.ExtKeyUsageServerAuth {
		return "the CA may sign more than server certificates (it has no Extended Key Usage serverAuth); run `fusou-proxy ca rotate` and trust the new one"
	}
	return ""
}

// Reload reads the CA in the folder again and, when it is another CA than the one in use (a
// `ca rotate` beside the running proxy), starts using it: new leaves are signed by it and the
// cached ones are dropped. It reports whether the CA changed. A CA that does not load, or no
// longer covers a host the one in use covered, is refused and the old one stays.
func (a *Authority) Reload() (bool, error) {
	cert, key, err := load(a.dir, a.logger, a.now())
	if err != nil {
		return false, fmt.Errorf("reload ca: %w", err)
	}
	old := a.root.Load()
	if bytes.Equal(cert.Raw, old.cert.Raw) {
		return false, nil
	}
	next := &Authority{root: atomic.Pointer[root]{}}
	next.root.Store(newRoot(cert, key))
	for _, d := range old.cert.PermittedDNSDomains {
		if h := strings.TrimPrefix(d, "."); !next.covers(h) {
			return false, fmt.Errorf("reload ca: the new CA does not cover %s", h)
		}
	}
	a.mu.Lock()
	a.root.Store(next.root.Load())
	a.cache = newLRU(a.cacheSize)
	a.mu.Unlock()
	a.logger.Info("Reloaded CA", caFields(a.dir, cert)...)
	return true, nil
}

// Dir returns the CA folder.
func (a *Authority) Dir() string { return a.dir }

// Covers reports whether the CA's name constraints permit host (a DNS name, with or
// without a port). IP addresses are never covered.
func (a *Authority) Covers(host string) bool {
	h, err := normalizeHost(host)
	return err == nil && a.covers(h)
}

// covers is Covers for a normalised host.
func (a *Authority) covers(h string) bool {
	for _, d := range a.Certificate().PermittedDNSDomains {
		// A constraint with a leading dot permits subdomains only (RFC 5280 §4.2.1.10);
		// ours never have one, but a CA on disk is checked, not trusted.
		if strings.HasPrefix(d, ".") {
			if strings.HasSuffix(h, strings.ToLower(d)) {
				return true
			}
		} else if underDomain(h, strings.ToLower(d)) {
			return true
		}
	}
	return false
}

// Stats returns the leaf cache counters.
func (a *Authority) Stats() Stats {
	a.mu.Lock()
	n := a.cache.len()
	a.mu.Unlock()
	return Stats{
		Hits:        a.hits.Load(),
		Misses:      a.misses.Load(),
		Generations: a.generations.Load(),
		Evictions:   a.evictions.Load(),
		Cached:      n,
	}
}

// GetCertificate serves LeafFor(hello.ServerName); it fits tls.Config.GetCertificate.
func (a *Authority) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		return nil, fmt.Errorf("get certificate: %w: no server name in client hello", ErrInvalidHost)
	}
	return a.LeafFor(hello.ServerName)
}

// underDomain reports whether h is domain d or one of its subdomains. Both are normalised.
func underDomain(h, d string) bool {
	return h == d || strings.HasSuffix(h, "."+d)
}

// normalizeHost lower-cases host and strips a port, IPv6 brackets and a trailing dot. It
// refuses IP addresses and anything that is not a plain DNS name.
func normalizeHost(host string) (string, error) {
	h := host
	// A bare IPv6 address fails to split and is kept whole, then refused below.
	if hp, _, err := net.SplitHostPort(h); err == nil {
		h = hp
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if _, err := netip.ParseAddr(h); err == nil {
		return "", ErrIPHost
	}
	if !validDNSName(h) {
		return "", ErrInvalidHost
	}
	return h, nil
}

// validDNSName accepts LDH labels (and '_', seen in the wild) of 1 to 63 bytes, up to
// 253 bytes in all. Wildcards are refused: the proxy asks for the exact host it serves.
func validDNSName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
