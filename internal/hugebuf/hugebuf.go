// Package hugebuf hands out fixed-size buffers carved from one anonymous memory mapping that
// asks the kernel for transparent huge pages (MADV_HUGEPAGE).
//
// A buffer there is physically contiguous inside its 2 MiB page. An O_DIRECT write from it pins
// one page where a Go heap buffer of 64 KiB pins sixteen, and its block request carries one
// segment where it carried one per 4 KiB page. On the test machine that cut the kernel's CPU
// for a journal write of 50 KB from about 9 to about 4 µs (docs/bench/proxy-pipeline.md, seventh pass).
//
// An Arena never returns memory to the system: its pages stay resident once used, up to the
// size given to New. Where the mapping cannot be made (a system other than Linux, or mmap
// refused), the Arena hands out nothing and its callers use their own buffers.
package hugebuf

import (
	"sync"
	"unsafe"
)

// Chunk is the unit in which the arena gives memory to a slot size: one huge page.
const Chunk = 2 << 20

// Arena is a mapping carved into slots of a few fixed sizes. Its methods are safe for
// concurrent use.
type Arena struct {
	mem  []byte // Chunk-aligned; empty when the mapping could not be made
	base uintptr

	mu      sync.Mutex
	carved  int // bytes of mem given to slot sizes, whole chunks
	classes []class
}

// class is the free slots of one size.
type class struct {
	size int
	free []*[]byte
}

// New maps size bytes (rounded down to whole chunks) for slots of the given sizes, each a
// multiple of 4096 and at most a quarter of a chunk. A size that breaks that rule gets no
// slots.
func New(size int, slotSizes ...int) *Arena {
	a := &Arena{}
	for _, s := range slotSizes {
		if s > 0 && s%4096 == 0 && s <= Chunk/4 {
			a.classes = append(a.classes, class{size: s})
		}
	}
	if size/Chunk > 0 && len(a.classes) > 0 {
		a.mem = mapHuge(size / Chunk * Chunk)
	}
	if len(a.mem) > 0 {
		a.base = uintptr(unsafe.Pointer(unsafe.SliceData(a.mem)))
	}
	return a
}

// Get returns an empty buffer with capacity size, starting at a 4096-byte boundary, or nil
// when the arena has no slots of that size or none left.
func (a *Arena) Get(size int) *[]byte {
	if len(a.mem) == 0 {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.classes {
		c := &a.classes[i]
		if c.size != size {
			continue
		}
		if len(c.free) == 0 && !a.carveLocked(c) {
			return nil
		}
		bp := c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
		return bp
	}
	return nil
}

// carveLocked cuts the next unused chunk into c's slots.
func (a *Arena) carveLocked(c *class) bool {
	if a.carved+Chunk > len(a.mem) {
		return false
	}
	chunk := a.mem[a.carved : a.carved+Chunk]
	a.carved += Chunk
	// Last slot first, so that Get hands them out in address order.
	for off := (Chunk/c.size - 1) * c.size; off >= 0; off -= c.size {
		b := chunk[off : off : off+c.size]
		c.free = append(c.free, &b)
	}
	return true
}

// Put gives back a buffer from Get and reports true, or reports false for a buffer that is
// not the arena's. The caller must not use the buffer afterwards.
func (a *Arena) Put(bp *[]byte) bool {
	if !a.Owns(*bp) {
		return false
	}
	*bp = (*bp)[:0]
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.classes {
		if c := &a.classes[i]; c.size == cap(*bp) {
			c.free = append(c.free, bp)
			return true
		}
	}
	return false
}

// Owns reports whether b's memory is the arena's.
func (a *Arena) Owns(b []byte) bool {
	if cap(b) == 0 || len(a.mem) == 0 {
		return false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b[:cap(b)])))
	return p >= a.base && p < a.base+uintptr(len(a.mem))
}

// Mapped reports whether the arena has memory to hand out.
func (a *Arena) Mapped() bool { return len(a.mem) > 0 }
