package hugebuf

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapHuge maps size bytes of private anonymous memory aligned to a chunk and advises the kernel
// to back it with huge pages; it returns nil when the mapping fails. The advice is only a
// hint: refused, or with huge pages turned off, the memory is still usable.
func mapHuge(size int) []byte {
	m, err := unix.Mmap(-1, 0, size+Chunk, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	// The extra chunk lets the arena start at a chunk boundary; the unaligned ends are never
	// touched, so they cost address space, not memory.
	off := (Chunk - int(uintptr(unsafe.Pointer(unsafe.SliceData(m)))%Chunk)) % Chunk
	m = m[off : off+size : off+size]
	_ = unix.Madvise(m, unix.MADV_HUGEPAGE)
	return m
}
