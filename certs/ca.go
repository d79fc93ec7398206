package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/fusou-proxy/fusou-proxy/internal/atomicfile"
	"github.com/fusou-proxy/fusou-proxy/internal/private"
	"go.uber.org/zap"
)

// caValidity is how long a new CA is valid (SPEC §10). A local root is trusted by hand, so
// a long life saves the user from re-installing it; Name Constraints limit what it can do.
const caValidity = 10 // years

// clockSkew backdates NotBefore so a client whose clock runs a little behind ours still
// accepts a certificate made a moment ago.
const clockSkew = time.Hour

// errNoCA means the folder holds no CA certificate: Open should make one.
var errNoCA = errors.New("no ca")

// newCA makes a CA key and self-signed certificate that may sign only hosts (and their
// subdomains) and no IP address.
func newCA(hosts []string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return nil, nil, fmt.Errorf("read random: %w", err)
	}
	notBefore := now.Add(-clockSkew)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// A unique, recognisable name, in the manner of mkcert's caUniqueName: trust stores
		// and users tell CAs apart by subject, and a rotated CA must not look like the old one.
		Subject: pkix.Name{
			CommonName:         "fusou-proxy CA " + hex.EncodeToString(id),
			Organization:       []string{"fusou-proxy local CA"},
			OrganizationalUnit: []string{userAndHostname()},
		},
		NotBefore: notBefore,
		NotAfter:  notBefore.AddDate(caValidity, 0, 0),
		KeyUsage:  x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		// serverAuth only (SPEC §10): verifiers that nest EKUs refuse any client, code or
		// e-mail certificate from this CA, even one a stolen key signs.
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,

		// Critical Name Constraints (RFC 5280 §4.2.1.10): clients refuse any leaf from this
		// CA for a name outside mitm_hosts, and any IP address, so a stolen key is worth
		// little to an attacker.
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         hosts,
		ExcludedIPRanges: []*net.IPNet{
			{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, key, nil
}

// randomSerial returns a random positive 128-bit serial number, as RFC 5280 §4.1.2.2 and
// the CA/B Forum ask (at least 64 bits of entropy).
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// userAndHostname names the install in the CA subject so a user can tell whose CA it is.
func userAndHostname() string {
	var s string
	if u, err := user.Current(); err == nil {
		s = u.Username + "@"
	}
	if h, err := os.Hostname(); err == nil {
		s += h
	}
	if s == "" {
		s = "unknown"
	}
	// X.520 caps an organizationalUnitName at 64 characters.
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// load reads and checks the CA in dir. It returns errNoCA if there is no certificate file,
// and a *RotateRequiredError if the files are unusable.
func load(dir string, logger *zap.Logger, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	bad := func(reason string, err error) error {
		return &RotateRequiredError{Dir: dir, Reason: reason, Err: err}
	}

	certPath := filepath.Join(dir, CertFile)
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, errNoCA
	} else if err != nil {
		return nil, nil, fmt.Errorf("read certificate: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, nil, bad("has a corrupt "+CertFile, err)
	}

	keyPath := filepath.Join(dir, KeyFile)
	keyPEM, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, bad("has no "+KeyFile, nil)
	} else if err != nil {
		return nil, nil, fmt.Errorf("read key: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	clear(keyPEM)
	if err != nil {
		return nil, nil, bad("has a corrupt "+KeyFile, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, bad("has a "+KeyFile+" that does not match "+CertFile, nil)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, bad("has a "+CertFile+" that is not a ca certificate", nil)
	}
	if !now.Before(cert.NotAfter) {
		return nil, nil, bad("expired on "+cert.NotAfter.UTC().Format(time.RFC3339), nil)
	}
	if err := fixKeyMode(keyPath, logger); err != nil {
		return nil, nil, err
	}

	// The DER file is derived from the PEM one, so a missing or stale copy is rewritten
	// rather than refused.
	der, err := os.ReadFile(filepath.Join(dir, CertDERFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("read der certificate: %w", err)
	}
	if !bytes.Equal(der, cert.Raw) {
		logger.Warn("Rewriting CA DER file from the PEM file", zap.String("file", filepath.Join(dir, CertDERFile)))
		if err := atomicfile.WriteFile(filepath.Join(dir, CertDERFile), cert.Raw, 0o644); err != nil {
			return nil, nil, err
		}
	}
	return cert, key, nil
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE pem block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}

func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PRIVATE KEY pem block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	clear(block.Bytes)
	if err != nil {
		// The parser's message describes the structure, never the key material.
		return nil, fmt.Errorf("parse key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("key is not an ecdsa p-256 key")
	}
	return key, nil
}

// writeCA writes the key, then the DER, then the PEM certificate. The PEM file goes last
// because its presence is what marks a CA as complete (see load).
func writeCA(dir string, cert *x509.Certificate, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	err = atomicfile.WriteFile(filepath.Join(dir, KeyFile), keyPEM, 0o600)
	clear(keyPEM)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, CertDERFile), cert.Raw, 0o644); err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	return atomicfile.WriteFile(filepath.Join(dir, CertFile), certPEM, 0o644)
}

// removeTempFiles deletes temp files left by a crash in atomicfile.WriteFile. They may hold
// part of a key, so they are removed rather than kept.
func removeTempFiles(dir string, logger *zap.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), atomicfile.TempMarker) {
			path := filepath.Join(dir, e.Name())
			if err := os.Remove(path); err != nil {
				logger.Warn("Could not remove CA temp file", zap.String("file", path), zap.Error(err))
			}
		}
	}
}

// moveAside moves the CA files in dir, if any, into a new folder dir/old-<UTC time>/ and
// returns its path ("" if there was nothing to move). Old CAs are never deleted: a user
// may still need the certificate to find and remove it from a trust store.
func moveAside(dir string, now time.Time) (string, error) {
	var present []string
	for _, name := range []string{CertFile, CertDERFile, KeyFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			present = append(present, name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("stat %s: %w", name, err)
		}
	}
	if len(present) == 0 {
		return "", nil
	}
	base := filepath.Join(dir, "old-"+now.UTC().Format("20060102T150405Z"))
	old := base
	for i := 2; ; i++ {
		err := os.Mkdir(old, 0o700)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || i > 100 {
			return "", fmt.Errorf("create %s: %w", old, err)
		}
		old = fmt.Sprintf("%s-%d", base, i)
	}
	for _, name := range present {
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(old, name)); err != nil {
			return "", fmt.Errorf("move %s: %w", name, err)
		}
	}
	if err := atomicfile.SyncDir(old); err != nil {
		return "", fmt.Errorf("sync %s: %w", old, err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return "", fmt.Errorf("sync ca folder: %w", err)
	}
	return old, nil
}

// ensureDir creates the CA folder and makes it private to the user (SPEC §2).
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create ca folder: %w", err)
	}
	if err := private.Dir(dir); err != nil {
		return fmt.Errorf("restrict ca folder: %w", err)
	}
	return nil
}

// caFields describes a CA for logs: public facts only, never the key.
func caFields(dir string, cert *x509.Certificate) []zap.Field {
	sum := sha256.Sum256(cert.Raw)
	return []zap.Field{
		zap.String("dir", dir),
		zap.String("subject", cert.Subject.CommonName),
		zap.String("sha256", hex.EncodeToString(sum[:])),
		zap.Strings("permitted", cert.PermittedDNSDomains),
		zap.Time("not_after", cert.NotAfter),
	}
}
