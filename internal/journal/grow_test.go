package journal

import (
	"os"
	"testing"
)

// A journal holding one small capture takes about that much disk, not a 64 MiB segment: the
// segment grows with its writes.
func TestSegmentGrowsWithUse(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := mustOpen(t, dir)
	r, err := j.Append(meta(1), frame(body(1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flushed(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		total += diskUsage(fi)
	}
	if total > 1<<20 {
		t.Errorf("the journal takes %d bytes of disk for one small capture, want under 1 MiB", total)
	}
}
