package assettest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"sync"
)

// serveUpload is stage 2: check the tokens, stream the body through SHA-256
// and store the object when the hash matches the handshake's.
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request) {
	tok, ok := uploadBearer(r)
	if !ok { // upload.ts:236-244
		writeError(w, http.StatusUnauthorized, "Missing Authorization bearer token", "AUTH_MISSING")
		return
	}
	claims, err := s.verifyUpload(r.Header.Get("X-Upload-Token"))
	if err != nil { // upload.ts:259-263
		writeError(w, http.StatusUnauthorized, "Invalid or expired upload token", "")
		return
	}
	hash, _ := claims["content_hash"].(string)
	if hash == "" { // upload.ts:268-270
		writeError(w, http.StatusBadRequest, "Invalid token payload", "")
		return
	}
	if s.verifyAccess(tok) != nil { // upload.ts:275-287; the dataset token is not looked at
		writeError(w, http.StatusUnauthorized, "Invalid or expired JWT token. Please refresh your session.", "AUTH_EXPIRED")
		return
	}
	key, _ := claims["key"].(string)
	declared, _ := claims["declared_size"].(float64)
	if key == "" || declared == 0 { // assets.ts:174-176
		writeError(w, http.StatusBadRequest, "Invalid token payload", "")
		return
	}
	// Stricter than the real server, which reads whatever comes: SPEC §5
	// has the client send Content-Length, the asset's size.
	if r.ContentLength < 0 {
		writeError(w, http.StatusLengthRequired, "Content-Length required", "")
		return
	}
	if r.ContentLength != int64(declared) {
		writeError(w, http.StatusBadRequest, "Content-Length differs from the declared file_size", "")
		return
	}
	s.mu.Lock()
	keep := s.keepBytes
	s.mu.Unlock()

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
	if hex.EncodeToString(h.Sum(nil)) != strings.ToLower(hash) { // assets.ts:179-206
		writeError(w, http.StatusBadRequest, "Content hash mismatch - data may be corrupted", "")
		return
	}

	s.mu.Lock()
	var data []byte
	if buf != nil {
		data = buf.Bytes()
	}
	// INSERT OR REPLACE (assets.ts:208-235): an object stored meanwhile
	// under the key, with this hash or another, is replaced.
	s.storeLocked(key, hash, n, data)
	s.uploads++
	s.uploadCounts[[2]string{key, hash}]++
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"key": key, "size": n}) // assets.ts:252-254
}

// copyBufs recycles the buffers of stage-2 copies, so that the fake adds
// little to the allocations a benchmark of the client reports.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
