package certs

import (
	"crypto/x509"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// A `ca rotate` beside a running proxy: Reload switches to the new CA, so /ca.pem and every
// new leaf are the new CA's, and no cached leaf of the old one is served.
func TestReloadAfterRotate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a := mustOpen(t, Options{Dir: dir})
	before, err := a.LeafFor("w01y.kancolle-server.com")
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := a.Reload(); changed || err != nil {
		t.Fatalf("Reload with the same CA = %v, %v; want false, nil", changed, err)
	}
	rotated, err := Rotate(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := a.Reload(); !changed || err != nil {
		t.Fatalf("Reload after a rotate = %v, %v; want true, nil", changed, err)
	}
	if string(a.PEM()) != string(rotated.PEM()) {
		t.Error("PEM is not the rotated CA's after Reload")
	}
	after, err := a.LeafFor("w01y.kancolle-server.com")
	if err != nil {
		t.Fatal(err)
	}
	if after == before {
		t.Fatal("the old CA's cached leaf is still served")
	}
	roots := x509.NewCertPool()
	roots.AddCert(rotated.Certificate())
	if _, err := after.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "w01y.kancolle-server.com"}); err != nil {
		t.Errorf("the leaf after Reload does not chain to the new CA: %v", err)
	}
}

// Reload races with leaf requests without a data race, and no leaf of a CA no longer in use
// stays in the cache.
func TestReloadConcurrentWithLeaves(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a := mustOpen(t, Options{Dir: dir})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 10 {
				if _, err := a.LeafFor(fmt.Sprintf("h%d-%d.kancolle-server.com", i, j%3)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range 3 {
		if _, err := Rotate(Options{Dir: dir}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	roots := x509.NewCertPool()
	roots.AddCert(a.Certificate())
	for i := range 4 {
		for j := range 3 {
			h := fmt.Sprintf("h%d-%d.kancolle-server.com", i, j)
			c, err := a.LeafFor(h)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: h}); err != nil {
				t.Errorf("after the reloads %s is served a leaf of an old CA: %v", h, err)
			}
		}
	}
}
