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

	mu      sync.Mutex // guards pending and armed, and serialises writes of the file
	pending []indexFileItem
	armed   bool
}

// add queues an acknowledged upload and arms a flush.
func (l *ackLog) add(key, hash string, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = append(l.pending, indexFileItem{Key: key, ContentHash: hash, Size: size})
	if !l.armed {
		l.armed = true
		time.AfterFunc(ackFlushDelay, func() { _ = l.flush() })
	}
}

// flush appends what is queued to the file and syncs it.
func (l *ackLog) flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed = false
	if len(l.pending) == 0 {
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err == nil {
		w := bufio.NewWriter(f)
		enc := json.NewEncoder(w)
		for _, it := range l.pending {
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
	}
	if err != nil {
		l.log.Warn("Could not record acknowledged uploads; after a crash they may be sent again", zap.Error(err))
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	l.pending = l.pending[:0]
	return nil
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

// truncate drops the file once a full save holds everything in it; the caller holds l.mu,
// so no append runs meanwhile, and pending (already in the saved index) is dropped too.
func (l *ackLog) truncateLocked() error {
	l.pending = l.pending[:0]
	if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", l.path, err)
	}
	return nil
}
