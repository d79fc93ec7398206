package journal

import "unsafe"

// aligned reports whether b's array starts at a block boundary (O_DIRECT needs it).
func aligned(b []byte) bool {
	return cap(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b[:cap(b)])))%block == 0
}

// alignSlice reslices b, which must have block bytes of room past its length, to start at a
// block boundary, with the same length.
func alignSlice(b []byte) []byte {
	off := (block - int(uintptr(unsafe.Pointer(unsafe.SliceData(b[:cap(b)])))%block)) % block
	return b[off : off+len(b)]
}

// useDirect turns O_DIRECT off in tests of the buffered fallback.
var useDirect = true

// skipWritten drops the first n bytes of bufs, which a write has taken; it may reslice bufs[0].
func skipWritten(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if len(bufs) > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}
