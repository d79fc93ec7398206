package journal

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// On Linux the segments are written with O_DIRECT (here on the test's temp folder), so that the
// bytes cost the CPU no page-cache copy.
func TestSegmentsAreWrittenDirect(t *testing.T) {
	j, _, _ := mustOpen(t, t.TempDir())
	r, err := j.Append(meta(1), frame(body(1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flushed(); err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	fd := int(j.cur.w.Fd())
	j.mu.Unlock()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&syscall.O_DIRECT == 0 {
		t.Skip("the temp folder's file system refuses O_DIRECT; the buffered fallback is in use")
	}
	checkRecord(t, r, 1)
}
