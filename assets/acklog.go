package assets

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// ackFlushDelay is how long acknowledged uploads gather before one append and fsync: well
// within SPEC §6's second, and a game start's burst of uploads costs a few fsyncs, not one each.
const ackFlushDelay = 200 * time.Millisecond

// ackLog makes the index's knowledge of acknowledged uploads durable within a second, without
// rewriting the whole index (which holds every key on the server) each time: uploads are
// appended to <index>.acks, one JSON item a line, and the file is removed once a full save of
// the index includes them. After a crash, load reads the index and then the log, so a capture
// replayed from the spool is known and dropped instead of being uploaded again.
type ackLog struct {
	path string
	log  *zap.Logger

	writeMu sync.Mutex // serialises appends to the file and its removal

	mu      sync.Mutex // guards the fields below; never held across I/O, so add never waits on a disk
	pending []indexFileItem
	armed   bool
	gen     uint64 // counts add calls, so that a save can tell whether any came after its snapshot
}

// add queues an acknowledged upload and arms a flush.
func (l *ackLog) add(key, hash string, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = append(l.pending, indexFileItem{Key: key, ContentHash: hash, Size: size})
	l.gen++
	if !l.armed {
		l.armed = true
		time.AfterFunc(ackFlushDelay, func() { _ = l.flush() })
	}
}

// flush appends what is queued to the file and syncs it.
func (l *ackLog) flush() error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	items := l.pending
	l.pending, l.armed = nil, false
	l.mu.Unlock()
	if len(items) == 0 {
		return nil
	}
	if err := appendItems(l.path, items); err != nil {
		l.mu.Lock()
		l.pending = append(items, l.pending...) // kept for the next flush
		l.mu.Unlock()
		l.log.Warn("Could not record acknowledged uploads; after a crash they may be sent again", zap.Error(err))
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	return nil
}

// appendItems appends items to the file at path, one JSON object a line, and syncs it.
func appendItems(path string, items []indexFileItem) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, it := range items {
		if err = enc.Encode(it); err != nil {
			break
		}
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// generation returns the count of add calls so far; a save reads it before its snapshot.
func (l *ackLog) generation() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// read returns the items in the file; a torn last line (a crash mid-append) is skipped.
func (l *ackLog) read() ([]indexFileItem, error) {
	f, err := os.Open(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", l.path, err)
	}
	defer f.Close()
	var items []indexFileItem
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var it indexFileItem
		if json.Unmarshal(sc.Bytes(), &it) == nil && it.Key != "" {
			items = append(items, it)
		}
	}
	return items, sc.Err()
}

// truncate drops the file, and what waits to be appended to it, once a full save of the
// index holds everything in them: that is, when no add came after gen, read before the save's
// snapshot. Otherwise the file stays (its items are also in the index; the next save drops it).
func (l *ackLog) truncate(gen uint64) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	if l.gen != gen {
		l.mu.Unlock()
		return nil
	}
	l.pending = nil
	l.mu.Unlock()
	if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", l.path, err)
	}
	return nil
}
