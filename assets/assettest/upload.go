package assettest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// serveUpload is stage 2: check the upload token, stream the body through
// SHA-256 and store the object when the hash matches the handshake's.
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request) {
	if _, ok := bearer(r); !ok {
		writeError(w, http.StatusUnauthorized, "bearer token required", "AUTH_MISSING")
		return
	}
	claims, err := s.verify(r.Header.Get("X-Upload-Token"))
	if err != nil {
		writeError(w, http.StatusUnauthorized, err.Error(), "")
		return
	}
	if !s.bearerOK(w, r) {
		return
	}
	if r.ContentLength < 0 {
		writeError(w, http.StatusLengthRequired, "Content-Length required", "")
		return
	}
	if r.ContentLength != claims.DeclaredSize {
		writeError(w, http.StatusBadRequest, "Content-Length differs from the declared file_size", "")
		return
	}
	s.mu.Lock()
	o, exists := s.objects[claims.Key]
	exists = exists && o.ContentHash == claims.ContentHash
	keep := s.keepBytes
	s.mu.Unlock()
	if exists {
		writeError(w, http.StatusConflict, "asset already stored with this content_hash", "")
		return
	}

	h := sha256.New()
	var dst io.Writer = h
	var buf *bytes.Buffer
	if keep {
		buf = new(bytes.Buffer)
		dst = io.MultiWriter(h, buf)
	}
	buf32 := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(dst, r.Body, *buf32)
	copyBufs.Put(buf32)
	if err != nil {
		// The client went away or sent less than Content-Length; nobody
		// will read an answer, but give one for completeness.
		writeError(w, http.StatusBadRequest, "body could not be read", "")
		return
	}
	if hex.EncodeToString(h.Sum(nil)) != claims.ContentHash {
		writeError(w, http.StatusBadRequest, "content hash mismatch", "")
		return
	}

	s.mu.Lock()
	var data []byte
	if buf != nil {
		data = buf.Bytes()
	}
	s.storeLocked(claims.Key, claims.ContentHash, n, data)
	s.uploads++
	s.uploadCounts[[2]string{claims.Key, claims.ContentHash}]++
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"key": claims.Key, "size": n})
}

// copyBufs recycles the buffers of stage-2 copies, so that the fake adds
// little to the allocations a benchmark of the client reports.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// keyItem is one entry of the keys listing, shaped as on the real server.
type keyItem struct {
	Key         string `json:"key"`
	ContentHash string `json:"contentHash"`
	Size        int64  `json:"size"`
	UploadedAt  int64  `json:"uploadedAt"`
}

// cacheTTL is the real server's listing cache lifetime, reported in
// cacheExpiresAt.
const cacheTTL = 6 * time.Hour

// serveKeys lists the stored objects uploaded after since (all without it),
// newest first.
func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request) {
	if !s.bearerOK(w, r) {
		return
	}
	var since int64 // 0: a full listing
	if v, err := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64); err == nil && v > 0 {
		since = v
	}

	s.mu.Lock()
	now := s.now()
	// Every object stored so far is at or below the snapshot, and storeLocked
	// puts every later one above it.
	upper := max(now.UnixMilli(), s.lastUploaded)
	s.lastUploaded = upper
	items := make([]keyItem, 0, len(s.objects))
	for _, o := range s.objects {
		if o.UploadedAt > since && o.UploadedAt <= upper {
			items = append(items, keyItem{o.Key, o.ContentHash, o.Size, o.UploadedAt})
		}
	}
	s.mu.Unlock()

	sort.Slice(items, func(i, j int) bool {
		if items[i].UploadedAt != items[j].UploadedAt {
			return items[i].UploadedAt > items[j].UploadedAt
		}
		return items[i].Key > items[j].Key
	})
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = it.Key
	}
	iso := func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
	writeJSON(w, http.StatusOK, map[string]any{
		"keys":            keys,
		"items":           items,
		"total":           len(items),
		"refreshedAt":     iso(now),
		"cacheExpiresAt":  iso(now.Add(cacheTTL)),
		"cached":          false,
		"incremental":     since > 0,
		"snapshotUpperAt": iso(time.UnixMilli(upper)),
		"snapshotUpperMs": upper,
	})
}
