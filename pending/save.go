package pending

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
)

// Save commits the bytes read from body as a new entry, durably, and returns it with
// created=true: a draft, a Commit of one and a Sync. The bytes are streamed to disk, never held
// whole in memory.
//
// If c.ContentHash is set, the bytes must match it and c.FileSize (else ErrMismatch), and when an
// entry already holds (c.Key, c.ContentHash) that entry is returned with created=false without
// reading body. If c.ContentHash is empty, both are computed from the bytes. Secret headers
// (Authorization, Cookie, ...) are dropped.
func (s *Store) Save(c Context, targetURL string, headers map[string]string, body io.Reader) (_ Entry, created bool, err error) {
	return s.save(c, Meta{TargetURL: targetURL, Headers: headers}, body, true)
}

// save is Save of an entry whose metadata starts as tmpl (its times too, when set); evict says
// whether the oldest entries may be evicted to make room, or ErrFull returned instead. Every
// failure is logged.
func (s *Store) save(c Context, tmpl Meta, body io.Reader, evict bool) (_ Entry, created bool, err error) {
	logged := false // Commit logs its own failures
	defer func() {
		if err != nil && !logged {
			err = fmt.Errorf("save %s: %w", c.Key, err)
			s.logSaveError(c.Key, err)
		}
	}()
	if c.Key == "" {
		return Entry{}, false, fmt.Errorf("%w: context has no key", ErrInvalid)
	}
	known := c.ContentHash != ""
	if known {
		if err := checkContext(c); err != nil {
			return Entry{}, false, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if dup := s.holder(c.Key, c.ContentHash); dup != nil {
			return dup.snapshotSafe(s), false, nil
		}
		// One byte more than promised is enough to tell a mismatch; a wrong size must not fill
		// the disk.
		body = io.LimitReader(body, c.FileSize+1)
	}
	d, err := s.NewDraft()
	if err != nil {
		return Entry{}, false, err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(d, h), body); err != nil {
		d.Discard()
		return Entry{}, false, fmt.Errorf("write draft: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if known && (d.size != c.FileSize || sum != c.ContentHash) {
		d.Discard()
		return Entry{}, false, fmt.Errorf("%w: got %d bytes with sha256 %s, want %d bytes with %s",
			ErrMismatch, d.size, sum, c.FileSize, c.ContentHash)
	}
	c.FileSize, c.ContentHash = d.size, sum
	d.Context, d.TargetURL, d.Headers, d.evict = c, tmpl.TargetURL, tmpl.Headers, evict
	if tmpl.CreatedAt != 0 {
		d.meta.CreatedAt = tmpl.CreatedAt
	}
	r := s.Commit([]*Draft{d})[0]
	if r.Err != nil || !r.Created {
		logged = true
		return r.Entry, r.Created, r.Err
	}
	if _, err := s.Sync(); err != nil {
		// The entry stays, written: the next Sync (at the latest, Close) makes it durable.
		return Entry{}, false, err
	}
	return r.Entry, true, nil
}

// holder returns the entry holding (key, hash), or nil.
func (s *Store) holder(key, hash string) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byKey[keyHash{key, hash}]
}
