package assets

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The table answers as a map of strings would, through random sets, replacements and lookups,
// with its real key hash and with one under which keys collide (chains of entries).
func TestKeyTableMatchesAMap(t *testing.T) {
	for _, tc := range []struct {
		name string
		sum  func(string) uint64
	}{
		{"maphash", nil},
		{"colliding", func(key string) uint64 { return uint64(len(key) % 3) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := newKeyTable(0)
			if tc.sum != nil {
				tab.sum = tc.sum
			}
			model := map[string]indexEntry{}
			rng := rand.New(rand.NewPCG(1, 2))
			for range 20000 {
				key := fmt.Sprintf("kcs2/img/%d.png", rng.IntN(500))
				hash := fmt.Sprintf("%x", rng.IntN(4))
				if rng.IntN(5) == 0 {
					hash = "" // the server did not say
				}
				switch rng.IntN(3) {
				case 0:
					size := rng.Int64N(1 << 20)
					tab.set(key, hash, size)
					model[key] = indexEntry{hash: hash, size: size}
				default:
					e, ok := model[key]
					if got := tab.has(key, hash); got != (ok && e.hash == hash) {
						t.Fatalf("has(%q, %q) = %v, the map says %v", key, hash, got, ok && e.hash == hash)
					}
					if got := tab.contains(key); got != ok {
						t.Fatalf("contains(%q) = %v, the map says %v", key, got, ok)
					}
				}
			}
			if tab.len() != len(model) {
				t.Fatalf("len %d, the map has %d", tab.len(), len(model))
			}
			seen := 0
			tab.each(func(key, hash string, size int64) {
				seen++
				if e, ok := model[key]; !ok || e.hash != hash || e.size != size {
					t.Fatalf("each gave %q %q %d; the map has %+v (%v)", key, hash, size, e, ok)
				}
			})
			if seen != len(model) {
				t.Fatalf("each gave %d entries, want %d", seen, len(model))
			}
		})
	}
}

// Replacing hashes leaves old bytes in the arena; once they are most of it, the arena is
// compacted and every entry still reads back.
func TestKeyTableCompactsReplacedHashes(t *testing.T) {
	tab := newKeyTable(0)
	for i := range 10 {
		tab.set(fmt.Sprintf("k%d", i), "h", int64(i))
	}
	big := strings.Repeat("a", 256<<10)
	for i := range 40 {
		tab.set("k3", fmt.Sprint(i)+big, 3)
	}
	if len(tab.arena) > 3<<20 { // 10 MiB without compaction
		t.Errorf("arena of %d bytes after replacing one 256 KiB hash 40 times: not compacted", len(tab.arena))
	}
	for i := range 10 {
		want := "h"
		if i == 3 {
			want = "39" + big
		}
		if !tab.has(fmt.Sprintf("k%d", i), want) {
			t.Fatalf("key k%d lost its hash after compaction", i)
		}
	}
}

// BenchmarkIndexGC measures what a garbage collection costs with an index of 355,000 keys (as
// many as a reference `make bench` run leaves) held as a map of strings, the index's first
// form, and as the keyTable. Reported: ns of wall time per forced collection, and the heap.
func BenchmarkIndexGC(b *testing.B) {
	const n = 355000
	key := func(i int) string { return fmt.Sprintf("kcs2/img/d/r1-fusou-c16-20261127T051734Z/%08d.png", i) }
	hash := func(i int) string { return fmt.Sprintf("%064x", i*7919) }
	for _, tc := range []struct {
		name  string
		build func() any
	}{
		{"map-of-strings", func() any {
			m := make(map[string]indexEntry)
			for i := range n {
				m[key(i)] = indexEntry{hash: hash(i), size: 50000}
			}
			return m
		}},
		{"keytable", func() any {
			t := newKeyTable(0)
			for i := range n {
				t.set(key(i), hash(i), 50000)
			}
			return t
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			index := tc.build()
			runtime.GC()
			runtime.ReadMemStats(&after)
			var took time.Duration
			for b.Loop() {
				start := time.Now()
				runtime.GC()
				took += time.Since(start)
			}
			b.ReportMetric(float64(took.Nanoseconds())/float64(b.N), "gc-ns/op")
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MiB")
			runtime.KeepAlive(index)
		})
	}
}
