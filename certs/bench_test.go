package certs

import (
	"fmt"
	"testing"
)

// BenchmarkLeafGenerate measures making one leaf (key, signature, parse), cache bypassed.
// Target: at most 1 ms.
func BenchmarkLeafGenerate(b *testing.B) {
	a := mustOpen(b, Options{})
	for b.Loop() {
		if _, err := a.newLeaf(a.root.Load(), "w01y.kancolle-server.com"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLeafCached measures LeafFor for a cached host, and checks it made no key.
func BenchmarkLeafCached(b *testing.B) {
	a := mustOpen(b, Options{})
	if _, err := a.LeafFor("w01y.kancolle-server.com"); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := a.LeafFor("w01y.kancolle-server.com:443"); err != nil {
			b.Fatal(err)
		}
	}
	if g := a.Stats().Generations; g != 1 {
		b.Fatalf("%d generations on cache hits, want 1", g)
	}
}

// BenchmarkLeafCachedParallel is BenchmarkLeafCached with every core asking at once, to
// show the cache mutex is not a bottleneck.
func BenchmarkLeafCachedParallel(b *testing.B) {
	a := mustOpen(b, Options{})
	hosts := make([]string, 16)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("w%02d.kancolle-server.com", i)
		if _, err := a.LeafFor(hosts[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := a.LeafFor(hosts[i%len(hosts)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	if g := a.Stats().Generations; g != uint64(len(hosts)) {
		b.Fatalf("%d generations on cache hits, want %d", g, len(hosts))
	}
}
