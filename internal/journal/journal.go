// Package journal is an append-only log of small records on disk that survives a crash of the
// process: the spool for captures that are not yet committed to the pending store.
//
// Append queues a record and returns: no copy of its body, no write, no new file, no
// fsync, so that a burst of new assets costs the client's path a checksum and a lock. A writer
// goroutine writes what is queued to the current segment file, straight from the caller's
// buffer where it has room for the record's header in front of the body (HeadRoom) and for
// the padding behind it (FrameSlack), then hands each buffer back to its owner (Append's done).
// It writes with O_DIRECT where the system has it: the bytes go to the disk without passing
// through the page cache, which on the test machine cost 5 µs of CPU per 50 KB against 22 to
// 80 µs for a buffered write (docs/bench/proxy-pipeline.md). A record is safe from a crash of
// the process once the writer has written it, normally within 10 to 20 ms; Flushed waits for
// that.
//
// A record stays until it is released; a segment file whose records are all released is removed.
// Open replays the records a previous run left unreleased.
//
// A record starts at a block boundary: a 16-byte header (magic, meta length, body length,
// checksum of meta and body), the meta, zeros up to a multiple of HeadRoom, the body, and zeros
// up to the next block. The checksum is the low 32 bits of XXH3, which costs half what CRC-32C
// does on a 50 KB body. (Open still replays the two earlier formats an older build may leave:
// FSJ2, the same layout with CRC-32C, and FSJ1, records one after another with no padding.)
// Replay stops at the first record of a segment that is short, zero or fails its checksum: the
// end of what was written, a write cut off by a crash, or pages a power loss never wrote. The
// journal is not fsync'd: it is safe against the process dying at any moment, not against the
// machine losing power before the records are committed elsewhere.
package journal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/xxh3"
)

const (
	headerSize = 16
	// SegmentSize is the size at which a segment is closed to appends and a new one begun.
	SegmentSize = 64 << 20
	// MaxMeta and MaxBody bound a record; replay treats a header beyond them as damage.
	MaxMeta = 64 << 10
	MaxBody = 16 << 20
	// maxQueued bounds the bytes queued and not yet written: past it Append fails (the disk is
	// slower than the captures) rather than hold memory without bound.
	maxQueued = 32 << 20
	// gatherFor is how long the writer lets appends gather before each write: a record is
	// written, so safe from a crash, within about that long plus one write. In a flood of new
	// assets 10 ms (about 50 records a write) made fusou-proxy 5 % faster than 1 ms did
	// (docs/bench/proxy-pipeline.md, sixth pass); a capture must survive a kill a second after
	// its response.
	gatherFor = 10 * time.Millisecond
	// block is the unit of O_DIRECT writes: offsets, lengths and buffer addresses.
	block = 4096
	// HeadRoom is the room an Append caller leaves in front of the body in its buffer (the
	// frame) for the record's header and meta, and FrameSlack the capacity it leaves beyond
	// the frame for the padding to a block: then the record is written from the frame itself.
	HeadRoom   = 512
	FrameSlack = block - HeadRoom
	// maxVectors bounds the buffers of one write system call (Linux's IOV_MAX is 1024).
	maxVectors = 1024

	filePrefix = "journal-"
	fileSuffix = ".log"
)

var (
	magic      = [4]byte{'F', 'S', 'J', '3'}
	magicV2    = [4]byte{'F', 'S', 'J', '2'} // CRC-32C
	magicV1    = [4]byte{'F', 'S', 'J', '1'} // CRC-32C, no padding
	castagnoli = crc32.MakeTable(crc32.Castagnoli)

	// ErrClosed is returned by Append after Close.
	ErrClosed = errors.New("journal closed")
	// ErrBehind is returned by Append when too much is queued and not yet written.
	ErrBehind = errors.New("journal writes are behind")
)

// Journal is a folder of segment files. Its methods are safe for concurrent use.
type Journal struct {
	dir string

	mu      sync.Mutex
	written *sync.Cond // on mu: signalled after each write
	cur     *segment   // the segment taking appends; nil until the first
	next    *segment   // made ahead by the writer, so that Append need not create one
	segs    map[*segment]struct{}
	seq     uint64 // the last segment number used
	closed  bool

	queue       []queued // records appended and not yet taken by the writer
	queuedBytes int64
	kick        chan struct{} // wakes the writer
	done        chan struct{} // closed when the writer has stopped

	// The writer's own: where it lays out the records whose frames it cannot write from.
	wbuf []byte

	live        atomic.Int64 // bytes of the records not yet released; read without mu
	segmentSize int64        // SegmentSize; smaller in tests
	noMakeAhead bool         // tests that count segment files turn prepareNext off
}

// queued is a record waiting for the writer, with its frame (HeadRoom bytes, then the body),
// which belongs to the journal until done is called.
type queued struct {
	r     *Record
	hdr   [headerSize]byte
	frame []byte
	done  func()
}

type segment struct {
	w, r    *os.File // writes (O_DIRECT where possible; nil once sealed and written) and reads
	path    string
	seq     uint64
	size    int64 // bytes appended
	written int64 // bytes the writer has written
	err     error // the write error that sealed the segment; records past written are lost
	live    int   // records not yet released
	sealed  bool  // no more appends: removed once live is 0
}

// Record is one appended (or replayed) record.
type Record struct {
	j        *Journal
	seg      *segment
	off      int64
	meta     []byte
	bodyLen  int
	headLen  int   // header, meta and padding: the body starts at off+headLen
	span     int64 // the record's bytes in the segment, padding included
	released bool  // guarded by j.mu
}

func newRecord(j *Journal, meta []byte, bodyLen int) *Record {
	headLen := roundUp(headerSize+len(meta), HeadRoom)
	return &Record{j: j, meta: meta, bodyLen: bodyLen, headLen: headLen,
		span: int64(roundUp(headLen+bodyLen, block))}
}

func roundUp(n, unit int) int { return (n + unit - 1) / unit * unit }

// Meta returns the record's meta bytes.
func (r *Record) Meta() []byte { return r.meta }

// BodyLen returns the body's length.
func (r *Record) BodyLen() int { return r.bodyLen }

func (r *Record) size() int64 { return r.span }
func (r *Record) end() int64  { return r.off + r.span }

// Flushed waits until the record is written to its segment file, and returns the error that
// kept it from being written, if one did.
func (r *Record) Flushed() error {
	j := r.j
	j.mu.Lock()
	defer j.mu.Unlock()
	for r.seg.written < r.end() && r.seg.err == nil {
		j.written.Wait()
	}
	if r.seg.written < r.end() {
		return fmt.Errorf("journal record not written: %w", r.seg.err)
	}
	return nil
}

// ReadBody waits until the record is written, then reads its body into buf, grown if it is too
// small, and returns it.
func (r *Record) ReadBody(buf []byte) ([]byte, error) {
	if err := r.Flushed(); err != nil {
		return nil, err
	}
	if cap(buf) < r.bodyLen {
		buf = make([]byte, r.bodyLen)
	}
	buf = buf[:r.bodyLen]
	if _, err := r.seg.r.ReadAt(buf, r.off+int64(r.headLen)); err != nil {
		return nil, fmt.Errorf("read journal record: %w", err)
	}
	return buf, nil
}

// Release ends the record: its bytes are no longer needed. A second call does nothing. A
// released record whose segment still holds live ones comes back from Open after a crash, so
// its consumer must be idempotent.
func (r *Record) Release() {
	j := r.j
	j.mu.Lock()
	if r.released {
		j.mu.Unlock()
		return
	}
	r.released = true
	r.seg.live--
	j.live.Add(-r.size())
	var remove func()
	if r.seg.sealed && r.seg.live == 0 {
		remove = j.detachLocked(r.seg)
	}
	j.mu.Unlock()
	if remove != nil { // removing a 64 MiB file takes a while: not under the lock appends need
		remove()
	}
}

// Open opens the journal in dir, creating dir (0700) if needed, and returns the records that
// earlier runs left, oldest first, with the number of bytes it dropped as damage. Their segments
// stay until the records are released.
func Open(dir string) (*Journal, []*Record, int64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, 0, fmt.Errorf("create journal folder: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, filePrefix+"*"+fileSuffix))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list journal folder: %w", err)
	}
	slices.Sort(names)
	j := &Journal{dir: dir, segs: make(map[*segment]struct{}), segmentSize: SegmentSize,
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	j.written = sync.NewCond(&j.mu)
	var recs []*Record
	var dropped int64
	for _, name := range names {
		if n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(name), filePrefix), fileSuffix), 16, 64); err == nil {
			j.seq = max(j.seq, n)
		}
		seg, rs, bad, err := j.replay(name)
		if err != nil {
			for seg := range j.segs {
				seg.r.Close()
			}
			return nil, nil, 0, err
		}
		dropped += bad
		recs = append(recs, rs...)
		if seg.live == 0 {
			j.removeLocked(seg)
		}
	}
	go j.writer()
	return j, recs, dropped, nil
}

// replay reads one segment's valid records; the segment is sealed.
func (j *Journal) replay(path string) (*segment, []*Record, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("open journal segment: %w", err)
	}
	seg := &segment{r: f, path: path, sealed: true}
	j.segs[seg] = struct{}{}
	br := bufio.NewReaderSize(f, 256<<10)
	var recs []*Record
	var off, damaged int64
	var hdr [headerSize]byte
	body := make([]byte, 0, 64<<10)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if err != io.EOF {
				damaged = headerSize // a header cut short
			}
			break
		}
		metaLen := int(binary.LittleEndian.Uint32(hdr[4:]))
		bodyLen := int(binary.LittleEndian.Uint32(hdr[8:]))
		if hdr == [headerSize]byte{} { // the zeros after the last write
			break
		}
		format := [4]byte(hdr[:4])
		v1 := format == magicV1
		if format != magic && format != magicV2 && !v1 || metaLen > MaxMeta || bodyLen > MaxBody {
			damaged = headerSize
			break
		}
		meta := make([]byte, metaLen)
		if _, err := io.ReadFull(br, meta); err != nil {
			damaged = headerSize + int64(metaLen)
			break
		}
		r := newRecord(j, meta, bodyLen)
		if v1 {
			r.headLen, r.span = headerSize+metaLen, int64(headerSize+metaLen+bodyLen)
		}
		damaged = r.span
		body = slices.Grow(body[:0], bodyLen)[:bodyLen]
		if _, err := br.Discard(r.headLen - headerSize - metaLen); err != nil {
			break
		}
		if _, err := io.ReadFull(br, body); err != nil {
			break
		}
		if checksum(format, meta, body) != binary.LittleEndian.Uint32(hdr[12:]) {
			break
		}
		if _, err := br.Discard(int(r.span) - r.headLen - bodyLen); err != nil {
			break
		}
		damaged = 0
		r.seg, r.off = seg, off
		recs = append(recs, r)
		seg.live++
		j.live.Add(r.size())
		off += r.size()
	}
	seg.size, seg.written = off, off
	return seg, recs, damaged, nil
}

// Append queues a record for the writer and returns at once: the record is on disk once Flushed
// returns nil. The body is frame[HeadRoom:]; the writer writes the record's header over
// frame[:HeadRoom] and pads it in frame's capacity beyond its length, when there is room for
// that (FrameSlack) and frame starts at a block boundary (as large Go allocations do), and
// copies the record otherwise. meta is the journal's from then on (Meta returns it); frame is
// the journal's until done (which may be nil) is called, after the write. If Append fails, both
// stay the caller's and done is not called.
func (j *Journal) Append(meta, frame []byte, done func()) (*Record, error) {
	if len(frame) < HeadRoom {
		return nil, fmt.Errorf("journal frame of %d bytes has no head room", len(frame))
	}
	body := frame[HeadRoom:]
	if len(meta) > MaxMeta || len(body) > MaxBody {
		return nil, fmt.Errorf("journal record of %d+%d bytes is over the limit", len(meta), len(body))
	}
	q := queued{frame: frame, done: done}
	copy(q.hdr[:], magic[:])
	binary.LittleEndian.PutUint32(q.hdr[4:], uint32(len(meta)))
	binary.LittleEndian.PutUint32(q.hdr[8:], uint32(len(body)))
	binary.LittleEndian.PutUint32(q.hdr[12:], checksum(magic, meta, body))
	r := newRecord(j, meta, len(body))
	q.r = r

	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil, ErrClosed
	}
	if j.cur != nil && (j.cur.size+r.size() > j.segmentSize || j.cur.err != nil) {
		j.sealLocked() // the writer finishes it; this append goes on to the next
	}
	if j.cur == nil {
		if j.cur, j.next = j.next, nil; j.cur == nil {
			seg, err := createSegment(j.dir, j.takeSeqLocked())
			if err != nil {
				return nil, err
			}
			j.cur = seg
		}
		j.segs[j.cur] = struct{}{}
	}
	if j.queuedBytes+r.size() > maxQueued {
		return nil, ErrBehind
	}
	seg := j.cur
	r.seg, r.off = seg, seg.size
	seg.size += r.size()
	seg.live++
	j.live.Add(r.size())
	j.queue = append(j.queue, q)
	j.queuedBytes += r.size()
	select {
	case j.kick <- struct{}{}:
	default:
	}
	return r, nil
}

// checksum returns the header's checksum of meta and body in the given record format.
func checksum(format [4]byte, meta, body []byte) uint32 {
	if format == magic {
		return uint32(xxh3.HashSeed(body, xxh3.Hash(meta)))
	}
	return crc32.Update(crc32.Checksum(meta, castagnoli), castagnoli, body)
}

func (j *Journal) takeSeqLocked() uint64 {
	j.seq++
	return j.seq
}

// createSegment creates the segment file numbered seq, open for writing and reading.
func createSegment(dir string, seq uint64) (*segment, error) {
	path := filepath.Join(dir, fmt.Sprintf("%s%016x%s", filePrefix, seq, fileSuffix))
	w, err := createSegmentFile(path)
	if err != nil {
		return nil, fmt.Errorf("create journal segment: %w", err)
	}
	r, err := os.Open(path)
	if err != nil {
		w.Close()
		os.Remove(path)
		return nil, fmt.Errorf("open journal segment: %w", err)
	}
	return &segment{w: w, r: r, path: path, seq: seq}, nil
}

// prepareNext makes the segment that follows the current one once that is half full, so that
// the Append that fills it goes straight on (making a segment takes a while). A failure is left for Append to meet and report.
func (j *Journal) prepareNext() {
	j.mu.Lock()
	if j.closed || j.noMakeAhead || j.next != nil || j.cur == nil || j.cur.size < j.segmentSize/2 {
		j.mu.Unlock()
		return
	}
	seq := j.takeSeqLocked()
	j.mu.Unlock()
	seg, err := createSegment(j.dir, seq)
	if err != nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed || j.next != nil || (j.cur != nil && j.cur.seq > seq) { // out of date: keep replay's order
		j.detachLocked(seg)()
		return
	}
	j.next = seg
}

// writer writes what Append stages, whenever there is some; once Close closes kick, it writes
// what is left and stops.
func (j *Journal) writer() {
	defer close(j.done)
	for {
		j.prepareNext()
		if _, ok := <-j.kick; !ok {
			for j.writeStaged() {
			}
			return
		}
		// Let a burst gather into one larger write, after a write as well as after a quiet
		// spell: each write costs a system call, block requests and extent conversions, and
		// each wakeup of the writer a thread switch, whatever the write's size.
		time.Sleep(gatherFor)
		j.writeStaged()
	}
}

// writeStaged writes the queued records, if any, and reports whether there were some.
func (j *Journal) writeStaged() bool {
	j.mu.Lock()
	batch := j.queue
	j.queue, j.queuedBytes = nil, 0
	j.mu.Unlock()
	if len(batch) == 0 {
		return false
	}
	// Records of one segment are written together. A batch spans two when Append sealed a
	// segment (full, or failed) and went on to the next before the writer took the queue.
	for len(batch) > 0 {
		n := 1
		for n < len(batch) && batch[n].r.seg == batch[0].r.seg {
			n++
		}
		j.writeRecords(batch[0].r.seg, batch[:n])
		batch = batch[n:]
	}
	return true
}

// writeRecords writes records that follow one another in seg, then hands their frames back.
func (j *Journal) writeRecords(seg *segment, recs []queued) {
	defer func() {
		for _, q := range recs {
			if q.done != nil {
				q.done()
			}
		}
	}()
	j.mu.Lock()
	failed, w := seg.err != nil, seg.w
	j.mu.Unlock()
	if failed { // what follows a failed write is lost with it: Flushed reports seg.err
		return
	}
	if w == nil { // removed: every record in it released, so none needs writing
		return
	}
	var copied int // the bytes of the records that cannot be written from their frames
	for _, q := range recs {
		if !fitsFrame(q) {
			copied += int(q.r.span)
		}
	}
	j.wbuf = alignedBuffer(j.wbuf[:0], copied)
	scratch := j.wbuf[:copied]
	vecs := make([][]byte, 0, len(recs))
	for _, q := range recs {
		var rec []byte
		if fitsFrame(q) {
			rec = q.frame[:q.r.span]
		} else {
			rec, scratch = scratch[:q.r.span], scratch[q.r.span:]
			copy(rec[q.r.headLen:], q.frame[HeadRoom:])
		}
		layOut(rec, q)
		vecs = append(vecs, rec)
	}
	off := recs[0].r.off
	end := recs[len(recs)-1].r.end()
	err := writeVectors(w, vecs, off)

	j.mu.Lock()
	if err != nil {
		seg.err = err // the records past written are lost; Append moves to a new segment
	} else {
		seg.written = end
	}
	closeIfDoneLocked(seg)
	j.written.Broadcast()
	j.mu.Unlock()
}

// fitsFrame reports whether q's record can be written from its frame: room for the header and
// meta in front of the body, for the padding behind it, and a block-aligned start.
func fitsFrame(q queued) bool {
	return q.r.headLen == HeadRoom && int64(cap(q.frame)) >= q.r.span && aligned(q.frame)
}

// layOut writes q's header and meta at the start of rec, which holds the body at its place,
// and zeros in the padding around the body.
func layOut(rec []byte, q queued) {
	r := q.r
	n := copy(rec, q.hdr[:])
	n += copy(rec[n:], r.meta)
	clear(rec[n:r.headLen])
	clear(rec[r.headLen+r.bodyLen:])
}

// alignedBuffer returns b, or a new buffer, with room for n bytes at a block-aligned address,
// as O_DIRECT requires, and with b's contents.
func alignedBuffer(b []byte, n int) []byte {
	if cap(b) >= n && aligned(b) {
		return b
	}
	nb := make([]byte, len(b), max(n, 2*cap(b), block)+block)
	nb = alignSlice(nb)
	copy(nb, b)
	return nb
}

// sealLocked ends appends to the current segment, removing it if no record in it is live.
// The writer may still be writing it: it closes the file when done.
func (j *Journal) sealLocked() {
	seg := j.cur
	j.cur = nil
	seg.sealed = true
	closeIfDoneLocked(seg)
	if seg.live == 0 {
		j.removeLocked(seg)
	}
}

// closeIfDoneLocked closes a sealed segment's write side once the writer has nothing more to
// write to it.
func closeIfDoneLocked(seg *segment) {
	if seg.sealed && seg.w != nil && (seg.written >= seg.size || seg.err != nil) {
		seg.w.Close()
		seg.w = nil
	}
}

func (j *Journal) removeLocked(seg *segment) { j.detachLocked(seg)() }

// detachLocked takes seg out of the journal and returns what closes its files and removes it.
func (j *Journal) detachLocked(seg *segment) func() {
	delete(j.segs, seg)
	w, r, path := seg.w, seg.r, seg.path
	seg.w = nil
	return func() {
		if w != nil {
			w.Close()
		}
		r.Close()
		os.Remove(path)
	}
}

// LiveBytes returns the size of the records not yet released.
func (j *Journal) LiveBytes() int64 { return j.live.Load() }

// Close writes what is staged, stops appends and closes the segment files. Unreleased records
// stay on disk for the next Open; a segment with none is removed. Records must not be read
// after Close.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true // no Append sends on kick from now on
	j.written.Broadcast()
	j.mu.Unlock()
	close(j.kick)
	<-j.done

	j.mu.Lock()
	defer j.mu.Unlock()
	var err error
	if seg := j.cur; seg != nil {
		if seg.written < seg.size {
			err = fmt.Errorf("close journal: %d bytes not written: %w", seg.size-seg.written, seg.err)
		}
		j.sealLocked()
	}
	if j.next != nil {
		j.detachLocked(j.next)()
		j.next = nil
	}
	for seg := range j.segs {
		seg.r.Close()
	}
	j.written.Broadcast()
	return err
}
