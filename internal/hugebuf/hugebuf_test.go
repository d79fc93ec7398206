package hugebuf

import (
	"runtime"
	"sync"
	"testing"
	"unsafe"
)

const small, large = 69632, 135168 // a 64 KiB and a 128 KiB body with the journal's 4 KiB frame

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b[:cap(b)]))) }

func TestSlotsAreAlignedDisjointAndBounded(t *testing.T) {
	a := New(4*Chunk, small, large)
	if runtime.GOOS != "linux" {
		if a.Mapped() || a.Get(small) != nil {
			t.Fatal("an arena outside Linux handed out memory")
		}
		return
	}
	if !a.Mapped() {
		t.Fatal("no mapping on Linux")
	}
	type span struct{ from, to uintptr }
	var got []span
	counts := map[int]int{}
	for _, size := range []int{small, large, small} { // sizes interleave across chunks
		for {
			bp := a.Get(size)
			if bp == nil {
				break
			}
			b := *bp
			if len(b) != 0 || cap(b) != size || addr(b)%4096 != 0 || !a.Owns(b) {
				t.Fatalf("slot len %d cap %d at %#x owned %v", len(b), cap(b), addr(b), a.Owns(b))
			}
			got = append(got, span{addr(b), addr(b) + uintptr(size)})
			counts[size]++
		}
	}
	// Four chunks: the first pass of small slots takes all four, so large gets none.
	if counts[small] != 4*(Chunk/small) || counts[large] != 0 {
		t.Fatalf("slots handed out: %v, want %d small and 0 large", counts, 4*(Chunk/small))
	}
	for i := range got {
		for j := range i {
			if got[i].from < got[j].to && got[j].from < got[i].to {
				t.Fatalf("slots %d and %d overlap", i, j)
			}
		}
	}
}

func TestPutReusesAndRefusesStrangers(t *testing.T) {
	a := New(Chunk, small)
	if !a.Mapped() {
		t.Skip("no huge-page arena on this system")
	}
	bp := a.Get(small)
	*bp = append(*bp, 1, 2, 3)
	first := addr(*bp)
	if !a.Put(bp) {
		t.Fatal("Put refused the arena's own buffer")
	}
	again := a.Get(small)
	if addr(*again) != first || len(*again) != 0 {
		t.Fatalf("Get after Put: %#x len %d, want the same slot (%#x), empty", addr(*again), len(*again), first)
	}
	heap := make([]byte, 0, small)
	if a.Put(&heap) || a.Owns(heap) {
		t.Fatal("the arena claimed a heap buffer")
	}
	if a.Get(4096) != nil {
		t.Fatal("a size the arena was not made for got a slot")
	}
}

func TestSizesOutsideTheRulesGetNothing(t *testing.T) {
	a := New(Chunk, 5000, Chunk/2, 0)
	if a.Mapped() || a.Get(5000) != nil || a.Get(Chunk/2) != nil {
		t.Fatal("an arena with no valid slot size mapped memory or handed it out")
	}
}

func TestConcurrentGetAndPut(t *testing.T) {
	a := New(2*Chunk, small)
	if !a.Mapped() {
		t.Skip("no huge-page arena on this system")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	inUse := map[uintptr]bool{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				bp := a.Get(small)
				if bp == nil {
					continue // all taken by the others for now
				}
				p := addr(*bp)
				mu.Lock()
				if inUse[p] {
					mu.Unlock()
					t.Errorf("slot %#x handed out twice", p)
					return
				}
				inUse[p] = true
				mu.Unlock()
				(*bp) = append(*bp, byte(p)) // touch it
				mu.Lock()
				delete(inUse, p)
				mu.Unlock()
				a.Put(bp)
			}
		}()
	}
	wg.Wait()
}
