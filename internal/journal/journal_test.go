package journal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func body(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 1000+i*37) }
func meta(i int) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, i)) }

// frame lays b out as an Append caller with a pooled buffer does: HeadRoom in front, slack
// behind, at a block boundary, so that the record is written from it.
func frame(b []byte) []byte {
	raw := make([]byte, HeadRoom+len(b)+FrameSlack+block)
	f := alignSlice(raw[:HeadRoom+len(b)])
	copy(f[HeadRoom:], b)
	return f
}

// tightFrame has no slack: the writer copies the record.
func tightFrame(b []byte) []byte {
	f := append(make([]byte, HeadRoom), b...)
	return f[:len(f):len(f)]
}

func mustOpen(t *testing.T, dir string) (*Journal, []*Record, int64) {
	t.Helper()
	j, recs, dropped, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j, recs, dropped
}

// setSegments sets the segment size, and whether the writer makes the next segment ahead, under
// the lock the writer reads them with.
func setSegments(j *Journal, size int64, makeAhead bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.segmentSize, j.noMakeAhead = size, !makeAhead
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, filePrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func checkRecord(t *testing.T, r *Record, i int) {
	t.Helper()
	if !bytes.Equal(r.Meta(), meta(i)) {
		t.Fatalf("record %d meta = %q", i, r.Meta())
	}
	b, err := r.ReadBody(nil)
	if err != nil || !bytes.Equal(b, body(i)) || r.BodyLen() != len(body(i)) {
		t.Fatalf("record %d body: %d bytes, err %v", i, len(b), err)
	}
}

// checkReplay closes j, opens its folder again and checks that exactly the records numbered
// want come back, in order.
func checkReplay(t *testing.T, j *Journal, dir string, want ...int) {
	t.Helper()
	j.Close()
	_, recs, _ := mustOpen(t, dir)
	if len(recs) != len(want) {
		t.Fatalf("replayed %d records, want %d", len(recs), len(want))
	}
	for i, n := range want {
		checkRecord(t, recs[i], n)
	}
}

// What is appended and not released comes back from Open, in order, byte for byte; once all of
// it is released, no segment is left.
func TestReplayAfterRestart(t *testing.T) {
	dir := t.TempDir()
	j, recs, _ := mustOpen(t, dir)
	if len(recs) != 0 {
		t.Fatalf("new journal replayed %d records", len(recs))
	}
	var want int64
	for i := range 100 {
		f := frame(body(i))
		if i%3 == 0 {
			f = tightFrame(body(i)) // copied by the writer: the same record on disk
		}
		r, err := j.Append(meta(i), f, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkRecord(t, r, i)
		want += r.size()
	}
	if got := j.LiveBytes(); got != want {
		t.Errorf("LiveBytes = %d, want %d", got, want)
	}
	j.Close() // as a crash would leave it: nothing released

	j2, recs, dropped := mustOpen(t, dir)
	if len(recs) != 100 || dropped != 0 {
		t.Fatalf("replayed %d records, dropped %d bytes; want 100, 0", len(recs), dropped)
	}
	for i, r := range recs {
		checkRecord(t, r, i)
	}
	if got := j2.LiveBytes(); got != want {
		t.Errorf("LiveBytes after replay = %d, want %d", got, want)
	}
	for _, r := range recs {
		r.Release()
		r.Release() // twice is harmless
	}
	if got := segments(t, dir); len(got) != 0 || j2.LiveBytes() != 0 {
		t.Errorf("after releasing every record: segments %v, live %d", got, j2.LiveBytes())
	}
	// New appends go on after the old segments' numbers.
	if _, err := j2.Append(meta(1), frame(body(1)), nil); err != nil {
		t.Fatal(err)
	}
	j2.Close()
	_, recs, _ = mustOpen(t, dir)
	if len(recs) != 1 {
		t.Fatalf("replayed %d records, want 1", len(recs))
	}
	checkRecord(t, recs[0], 1)
}

// A record cut off by a crash, or damaged, ends the segment's replay: the records before it
// come back, nothing after it does, and the lost bytes are counted.
func TestReplayStopsAtDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string, body, end int64) // body: where the last record's body starts
	}{
		{"torn tail", func(t *testing.T, path string, body, _ int64) {
			if err := os.Truncate(path, body+10); err != nil {
				t.Fatal(err)
			}
		}},
		{"flipped byte", func(t *testing.T, path string, body, _ int64) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{0xff}, body+100); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage header", func(t *testing.T, path string, _, end int64) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.WriteAt(bytes.Repeat([]byte{0xff}, 40), end)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			j, _, _ := mustOpen(t, dir)
			var bodyAt, end int64 // the file may be longer than the records, preallocated
			for i := range 3 {
				r, err := j.Append(meta(i), frame(body(i)), nil)
				if err != nil {
					t.Fatal(err)
				}
				bodyAt, end = r.off+int64(r.headLen), r.end()
			}
			j.Close()
			tc.damage(t, segments(t, dir)[0], bodyAt, end)
			_, recs, dropped := mustOpen(t, dir)
			want := 2
			if tc.name == "garbage header" {
				want = 3
			}
			if len(recs) != want || dropped <= 0 {
				t.Fatalf("replayed %d records, dropped %d bytes; want %d and some", len(recs), dropped, want)
			}
			for i, r := range recs {
				checkRecord(t, r, i)
			}
		})
	}
}

// A full segment is sealed and a new one begun; a sealed segment goes once its records are
// released, while the current one stays for appends.
func TestSegmentsRotateAndGo(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := mustOpen(t, dir)
	setSegments(j, 4<<10, false) // count only the segments appends made
	var recs []*Record
	for i := range 10 {
		r, err := j.Append(meta(i), frame(body(i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	n := len(segments(t, dir))
	if n < 3 {
		t.Fatalf("%d segments for 10 records of ~1.2 KB in 4 KB segments", n)
	}
	for _, r := range recs[:len(recs)-1] {
		r.Release()
	}
	if got := segments(t, dir); len(got) != 1 {
		t.Errorf("segments after releasing all but the last record = %v", got)
	}
	recs[len(recs)-1].Release()
	if got := segments(t, dir); len(got) != 1 { // the current segment takes more appends
		t.Errorf("segments after releasing every record = %v", got)
	}
	j.Close()
	if got := segments(t, dir); len(got) != 0 {
		t.Errorf("segments after Close with nothing live = %v", got)
	}
}

// Once the current segment is half full, the writer makes the next one, and the append that
// fills the current one goes on into it; Close removes it if no record went in.
func TestNextSegmentMadeAhead(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := mustOpen(t, dir)
	setSegments(j, 8<<10, true)
	var recs []*Record
	appendOne := func(i int) {
		t.Helper()
		r, err := j.Append(meta(i), frame(body(i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flushed(); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	for i := 0; j.LiveBytes() < j.segmentSize/2; i++ {
		appendOne(i)
	}
	ahead := func() string {
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.next == nil {
			return ""
		}
		return j.next.path
	}
	deadline := time.Now().Add(10 * time.Second)
	for ahead() == "" {
		if time.Now().After(deadline) {
			t.Fatal("no segment made ahead")
		}
		appendOne(0) // another write, after which the writer looks again
	}
	next := ahead()
	if got := segments(t, dir); len(got) != 2 {
		t.Errorf("segments = %v, want the current one and the next", got)
	}
	for j.LiveBytes() < j.segmentSize*3/2 { // on into the next segment
		appendOne(1)
	}
	j.mu.Lock()
	current := j.cur.path
	j.mu.Unlock()
	if current != next {
		t.Errorf("appends went on into %s, not the segment made ahead (%s)", current, next)
	}
	for _, r := range recs {
		r.Release()
	}
	j.Close()
	if got := segments(t, dir); len(got) != 0 {
		t.Errorf("segments after Close with nothing live = %v", got)
	}
}

// A failed write loses the records it carried, says so to whoever waits for them, and leaves
// no damage in front of later records: the next append starts a new segment.
func TestFailedWriteIsReportedAndContained(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := mustOpen(t, dir)
	r0, err := j.Append(meta(0), frame(body(0)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r0.Flushed(); err != nil {
		t.Fatal(err)
	}
	// Swap the segment's write file for a read-only one: the next write fails.
	ro, err := os.Open(j.cur.path)
	if err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	good := j.cur.w
	j.cur.w = ro
	j.mu.Unlock()
	r1, err := j.Append(meta(1), frame(body(1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Flushed(); err == nil {
		t.Fatal("a record whose write failed reports it written")
	}
	if _, err := r1.ReadBody(nil); err == nil {
		t.Error("a record whose write failed could be read")
	}
	good.Close()
	r2, err := j.Append(meta(2), frame(body(2)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Flushed(); err != nil {
		t.Fatal(err)
	}
	if got := segments(t, dir); len(got) != 2 {
		t.Errorf("segments = %v, want the failed one and a new one", got)
	}
	checkReplay(t, j, dir, 0, 2)
}

// Where O_DIRECT is not used (another system, or a file system without it), the same holds.
func TestBufferedWrites(t *testing.T) {
	useDirect = false
	t.Cleanup(func() { useDirect = true })
	TestReplayAfterRestart(t)
	TestSegmentsRotateAndGo(t)
}

func TestConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := mustOpen(t, dir)
	setSegments(j, 64<<10, true)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				n := (g*100 + i) % 50
				r, err := j.Append(meta(n), frame(body(n)), nil)
				if err != nil {
					t.Error(err)
					return
				}
				b, err := r.ReadBody(make([]byte, 0, 10))
				if err != nil || !bytes.Equal(b, body(n)) {
					t.Errorf("read back %d: %v", n, err)
				}
				r.Release()
			}
		})
	}
	wg.Wait()
	if got := j.LiveBytes(); got != 0 {
		t.Errorf("LiveBytes = %d after releasing everything", got)
	}
	if got := segments(t, dir); len(got) > 2 {
		t.Errorf("segments left: %v, want at most the current one and the next made ahead", got)
	}
	if _, err := j.Append(nil, make([]byte, HeadRoom), nil); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if _, err := j.Append(meta(1), frame(body(1)), nil); err != ErrClosed {
		t.Errorf("Append after Close = %v", err)
	}
}

// A frame with head room and slack is written as it is: the journal lays the record's header
// out in front of the body in the caller's buffer. A frame without slack is copied and left
// alone. Both replay the same.
func TestFrameWrittenInPlace(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := mustOpen(t, dir)
	roomy, tight := frame(body(1)), tightFrame(body(2))
	for i, f := range [][]byte{roomy, tight} {
		r, err := j.Append(meta(i+1), f, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flushed(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(roomy[:4], magic[:]) {
		t.Errorf("roomy frame's head = %q, want the record header written in place", roomy[:4])
	}
	if !bytes.Equal(tight[:HeadRoom], make([]byte, HeadRoom)) {
		t.Error("tight frame was written into; it should have been copied")
	}
	checkReplay(t, j, dir, 1, 2)
}

// A segment of the first format (records one after another, no padding) left by an older
// build is replayed.
func TestReplaysFirstFormat(t *testing.T) {
	dir := t.TempDir()
	var seg []byte
	for i := range 3 {
		m, b := meta(i), body(i)
		hdr := make([]byte, headerSize)
		copy(hdr, magicV1[:])
		binary.LittleEndian.PutUint32(hdr[4:], uint32(len(m)))
		binary.LittleEndian.PutUint32(hdr[8:], uint32(len(b)))
		binary.LittleEndian.PutUint32(hdr[12:], crc32.Update(crc32.Checksum(m, castagnoli), castagnoli, b))
		seg = append(append(append(seg, hdr...), m...), b...)
	}
	seg = append(seg, make([]byte, 3000)...) // the zeros after the last write
	if err := os.WriteFile(filepath.Join(dir, filePrefix+"0000000000000001"+fileSuffix), seg, 0o600); err != nil {
		t.Fatal(err)
	}
	j, recs, dropped := mustOpen(t, dir)
	if len(recs) != 3 || dropped != 0 {
		t.Fatalf("replayed %d records, dropped %d bytes; want 3, 0", len(recs), dropped)
	}
	for i, r := range recs {
		checkRecord(t, r, i)
		r.Release()
	}
	if j.LiveBytes() != 0 || len(segments(t, dir)) != 0 {
		t.Errorf("after releasing: live %d, segments %v", j.LiveBytes(), segments(t, dir))
	}
}

// A segment of the second format (the layout of today, with CRC-32C for its checksum) left by
// an older build is replayed, and a record whose CRC does not match ends it; a new record is
// written in the current format, with the XXH3 checksum.
func TestReplaysSecondFormat(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := mustOpen(t, dir)
	var offs []int64
	for i := range 3 {
		r, err := j.Append(meta(i), frame(body(i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, r.off)
	}
	j.Close()
	path := segments(t, dir)[0]
	seg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, off := range offs {
		hdr := seg[off : off+headerSize]
		if [4]byte(hdr[:4]) != magic || binary.LittleEndian.Uint32(hdr[12:]) != checksum(magic, meta(i), body(i)) {
			t.Fatalf("record %d header %x: want FSJ3 with the XXH3 checksum", i, hdr)
		}
		copy(hdr, magicV2[:])
		sum := crc32.Update(crc32.Checksum(meta(i), castagnoli), castagnoli, body(i))
		if i == 2 {
			sum++ // damaged: replay ends before it
		}
		binary.LittleEndian.PutUint32(hdr[12:], sum)
	}
	if err := os.WriteFile(path, seg, 0o600); err != nil {
		t.Fatal(err)
	}
	_, recs, dropped := mustOpen(t, dir)
	if len(recs) != 2 || dropped <= 0 {
		t.Fatalf("replayed %d records, dropped %d bytes; want 2 and the third dropped", len(recs), dropped)
	}
	for i, r := range recs {
		checkRecord(t, r, i)
	}
}

// Append keeps the body, not a copy, until it is written: done comes once, after the write, and
// the caller may then reuse the bytes.
func TestDoneHandsTheBodyBack(t *testing.T) {
	j, _, _ := mustOpen(t, t.TempDir())
	var mu sync.Mutex
	doneFor := map[int]int{}
	var recs []*Record
	for i := range 50 {
		b := frame(body(i))
		r, err := j.Append(meta(i), b, func() {
			mu.Lock()
			doneFor[i]++
			mu.Unlock()
			clear(b) // the caller reuses its buffer
		})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	for i, r := range recs {
		if err := r.Flushed(); err != nil {
			t.Fatal(err)
		}
		checkRecord(t, r, i) // read from the file: the cleared buffer does not matter
	}
	j.Close()
	mu.Lock()
	defer mu.Unlock()
	for i := range 50 {
		if doneFor[i] != 1 {
			t.Errorf("done for record %d called %d times", i, doneFor[i])
		}
	}
}
