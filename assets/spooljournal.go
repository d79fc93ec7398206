package assets

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/internal/journal"
)

// A new asset whose body fits in a Spool's memory (maxMemoryBody) is appended to the spool
// journal on the client's path (spool/journal-*.log: the journal takes the buffer and writes it
// from its own goroutine; no copy, no file, no fsync, no SHA-256 here), and committed to the
// pending store later by the drainers. While captures stream in,
// the drainers commit at most one per busyCommitEvery, so that a burst of new assets costs the
// client little more than a burst of known ones; once the traffic goes quiet they commit at full
// speed. A process killed before the commit loses nothing: Open replays the journal.
const (
	busyCommitEvery = time.Second
	drainers        = 4
	// shutdownDrain bounds how long the drainers go on committing once the pipeline stops: a
	// game's burst (hundreds of assets) commits in under a second; what a flood leaves stays in
	// the journal for the next start.
	shutdownDrain = 3 * time.Second
	// DefaultMaxSpoolBytes bounds the journal's uncommitted bytes when PipelineOptions says
	// nothing: past it, new captures are shed.
	DefaultMaxSpoolBytes int64 = 2 << 30
)

// spoolMeta is a journal record's meta: what a capture is, besides its bytes.
type spoolMeta struct {
	Path     string `json:"path"`
	Encoding string `json:"encoding,omitempty"`
}

// encodeSpoolMeta returns m as json.Marshal encodes it. A path of printable ASCII that needs no
// escaping, nearly every one, is written out directly: json.Marshal's reflection would cost the
// client's path about a microsecond for each new asset.
func encodeSpoolMeta(m spoolMeta) []byte {
	if !plainJSON(m.Path) || !plainJSON(m.Encoding) {
		b, _ := json.Marshal(m)
		return b
	}
	b := make([]byte, 0, len(`{"path":"","encoding":""}`)+len(m.Path)+len(m.Encoding))
	b = append(append(b, `{"path":"`...), m.Path...)
	if m.Encoding != "" {
		b = append(append(b, `","encoding":"`...), m.Encoding...)
	}
	return append(b, `"}`...)
}

// plainJSON reports whether json.Marshal writes s between quotes as it is: printable ASCII
// without the characters it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// spoolKey identifies a capture waiting in the journal, so that a repeat of it is dropped.
type spoolKey struct {
	print   bodyPrint
	urlPath string
}

// backlog is the journal's captures waiting for a drainer, oldest first, in a list of blocks
// rather than one slice: a flood leaves tens of thousands waiting, and a slice that grew by
// doubling copied them all into fresh memory at each step (1.1 µs of every new asset in a
// flood's profile, most of it page faults). Its fields are guarded by Pipeline.backlogMu.
type backlog struct {
	ready      chan struct{} // signalled when an item is pushed
	head, tail *backlogBlock // nil when empty
	spare      *backlogBlock // an emptied block, kept for the next one needed
	n          int
}

const backlogBlockLen = 512

type backlogBlock struct {
	items       [backlogBlockLen]finished
	read, write int
	next        *backlogBlock
}

func (b *backlog) push(c finished) {
	if b.tail == nil || b.tail.write == backlogBlockLen {
		blk := b.spare
		if blk == nil {
			blk = new(backlogBlock)
		}
		b.spare = nil
		if b.tail == nil {
			b.head = blk
		} else {
			b.tail.next = blk
		}
		b.tail = blk
	}
	b.tail.items[b.tail.write] = c
	b.tail.write++
	b.n++
}

func (b *backlog) pop() (finished, bool) {
	blk := b.head
	if blk == nil || blk.read == blk.write {
		return finished{}, false
	}
	c := blk.items[blk.read]
	blk.items[blk.read] = finished{} // the journal record and strings go with the commit
	blk.read++
	b.n--
	if blk.read == blk.write { // used up: only the tail block is ever short
		b.head = blk.next
		if b.head == nil {
			b.tail = nil
		}
		blk.read, blk.write, blk.next = 0, 0, nil
		b.spare = blk
	}
	return c, true
}

// openJournal opens the spool journal and queues what an earlier run left in it.
func (p *Pipeline) openJournal() error {
	j, recs, dropped, err := journal.Open(p.spoolDir)
	if err != nil {
		return err
	}
	p.journal = j
	p.backlog.ready = make(chan struct{}, 1)
	for _, r := range recs {
		var m spoolMeta
		if err := json.Unmarshal(r.Meta(), &m); err != nil || m.Path == "" {
			p.log.Warn("spool record unreadable; dropped", zap.Error(err))
			r.Release()
			continue
		}
		p.pushBacklog(finished{urlPath: m.Path, encoding: m.Encoding, size: int64(r.BodyLen()), rec: r})
	}
	if len(recs) > 0 {
		p.log.Info("Recovered captures from the spool", zap.Int("captures", len(recs)))
	}
	if dropped > 0 {
		p.log.Warn("Spool journal had a damaged tail; its bytes were dropped", zap.Int64("bytes", dropped))
	}
	return nil
}

// journalCapture appends a new in-memory capture to the journal and queues it for a drainer,
// or drops it when the same body for the same path already waits there, or sheds it when the
// journal is full or failing. It reports whether the journal took the buffer, which it then
// returns to the pool once written.
func (p *Pipeline) journalCapture(c finished, bufp *[]byte, frame []byte) (taken bool) {
	if c.print.size > 0 { // unprinted: its path not seen lately; a duplicate is dropped at commit
		p.backlogMu.Lock()
		_, waiting := p.inSpool[spoolKey{c.print, c.urlPath}]
		p.backlogMu.Unlock()
		if waiting {
			p.stats.known.Add(1)
			return false
		}
	}
	if p.journal.LiveBytes()+int64(len(frame)) > p.o.MaxSpoolBytes {
		p.shed(c.urlPath, c.size, "spool full")
		return false
	}
	meta := encodeSpoolMeta(spoolMeta{Path: c.urlPath, Encoding: c.encoding})
	rec, err := p.journal.Append(meta, frame, func() { putBuffer(bufp) })
	if err != nil {
		p.shed(c.urlPath, c.size, err.Error())
		return false
	}
	c.rec = rec
	p.pushBacklog(c)
	return true
}

func (p *Pipeline) pushBacklog(c finished) {
	p.backlogMu.Lock()
	p.backlog.push(c)
	if c.print.size > 0 {
		p.inSpool[spoolKey{c.print, c.urlPath}] = struct{}{}
	}
	p.backlogMu.Unlock()
	select {
	case p.backlog.ready <- struct{}{}:
	default:
	}
}

// popBacklog takes the oldest waiting capture, if any.
func (p *Pipeline) popBacklog() (finished, bool) {
	p.backlogMu.Lock()
	defer p.backlogMu.Unlock()
	b := &p.backlog
	c, ok := b.pop()
	if ok && b.n > 0 { // let another drainer see the rest
		select {
		case b.ready <- struct{}{}:
		default:
		}
	}
	return c, ok
}

// Backlog returns the number of captures waiting in the journal for their commit.
func (p *Pipeline) Backlog() int {
	p.backlogMu.Lock()
	defer p.backlogMu.Unlock()
	return p.backlog.n
}

// drainer commits the journal's captures, paced while captures stream in. At shutdown it goes
// on without pacing until the backlog is empty or shutdownDrain has passed; what is left stays
// in the journal for the next start.
func (p *Pipeline) drainer(ctx context.Context) {
	defer p.wg.Done()
	for ctx.Err() == nil {
		if p.commitPace.wait(ctx) != nil {
			break
		}
		c, ok := p.popBacklog()
		if !ok {
			select {
			case <-p.backlog.ready:
			case <-ctx.Done():
			}
			continue
		}
		p.commitJournaled(c)
	}
	// The first drainer to stop sets the deadline for all.
	p.drainDeadline.CompareAndSwap(0, time.Now().Add(p.shutdownDrain).UnixNano())
	for time.Now().Before(p.drainUntil()) {
		c, ok := p.popBacklog()
		if !ok {
			return
		}
		p.commitJournaled(c)
	}
}

func (p *Pipeline) drainUntil() time.Time { return time.Unix(0, p.drainDeadline.Load()) }

// commitJournaled hashes a journal capture (when its bytes are the resource itself), drops it if
// it is known, else writes it to a spool file and commits that; the record is released either
// way: from here on the store, or the log line of a failed commit, is the record.
func (p *Pipeline) commitJournaled(c finished) {
	waiting := spoolKey{c.print, c.urlPath} // what journalCapture put in inSpool, if printed
	defer func() {
		c.rec.Release()
		if waiting.print.size > 0 {
			p.backlogMu.Lock()
			delete(p.inSpool, waiting)
			p.backlogMu.Unlock()
		}
	}()
	bufp := getBuffer(c.rec.BodyLen())
	defer putBuffer(bufp)
	body, err := c.rec.ReadBody((*bufp)[:0])
	if err != nil {
		p.stats.shed.Add(1)
		p.log.Warn("capture not committed", zap.String("path", c.urlPath), zap.Error(err))
		return
	}
	if c.print.size == 0 && int64(len(body)) == c.size { // the first of its path, or replayed
		c.print = p.printOf(c.encoding, body)
		if id, ok := p.prints.get(c.print); ok && c.encoding == "" {
			c.hash = id.hash // the same bytes under another path: no SHA-256 needed
		}
	}
	if c.encoding == "" {
		if c.hash == "" {
			sum := sha256.Sum256(body)
			c.hash = hex.EncodeToString(sum[:])
		}
		if c.print.size > 0 {
			p.prints.add(c.print, assetID{hash: c.hash, size: c.size})
		}
		if p.dropKnown(c.urlPath, c.size, c.hash) {
			return
		}
	}
	f, err := p.spoolFile()
	if err == nil {
		_, err = f.Write(body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(f.Name())
		}
	}
	if err != nil {
		p.stats.shed.Add(1)
		p.log.Warn("capture not committed: spool file", zap.String("path", c.urlPath), zap.Error(err))
		return
	}
	c.spool = f.Name()
	p.commit(c)
}
