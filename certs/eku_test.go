package certs

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A new root carries Extended Key Usage serverAuth only (SPEC §10) and needs no rotation.
func TestNewCAIsServerAuthOnly(t *testing.T) {
	a := mustOpen(t, Options{Dir: filepath.Join(t.TempDir(), "ca")})
	if eku := a.Certificate().ExtKeyUsage; !slices.Equal(eku, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("root ExtKeyUsage = %v, want [serverAuth]", eku)
	}
	if advice := a.RotationAdvice(); advice != "" {
		t.Errorf("a new CA is advised to rotate: %s", advice)
	}
	leaf, err := a.LeafFor("w01y.kancolle-server.com")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(a.Certificate())
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "w01y.kancolle-server.com"}); err != nil {
		t.Errorf("a leaf of the new CA does not verify: %v", err)
	}
}

// A CA made before the root carried the EKU keeps loading and serving; rotation is advised.
func TestOldCAWithoutEKUKeepsWorking(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a := mustOpen(t, Options{Dir: dir})
	key, err := parseKeyPEM(mustReadFile(t, filepath.Join(dir, KeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	old := *a.Certificate()
	old.ExtKeyUsage = nil
	der, err := x509.CreateCertificate(rand.Reader, &old, &old, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, CertDERFile), der)
	writeTestFile(t, filepath.Join(dir, CertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))

	b := mustOpen(t, Options{Dir: dir})
	if len(b.Certificate().ExtKeyUsage) != 0 {
		t.Fatal("the rewritten CA still has an EKU")
	}
	if advice := b.RotationAdvice(); !strings.Contains(advice, "ca rotate") {
		t.Errorf("RotationAdvice = %q, want it to suggest ca rotate", advice)
	}
	if _, err := b.LeafFor("w01y.kancolle-server.com"); err != nil {
		t.Errorf("the old CA no longer signs leaves: %v", err)
	}
}
