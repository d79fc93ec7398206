package assettest

import (
	"math"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode"
)

// KeysMode shapes the cache fields of the keys listing, for tests of a
// client facing the real server's KV-cached answers. The zero value is a
// fresh answer read from the database.
type KeysMode struct {
	// Cached answers "cached": true, as when served from the KV manifest.
	Cached bool
	// Degraded adds "degraded": true, as a stale manifest served after the
	// database failed (asset-index-cache.ts:117-119, 325-327).
	Degraded bool
	// OmitSnapshotUpperMs leaves snapshotUpperMs out of a cached answer,
	// which SPEC §5 allows; ignored unless Cached.
	OmitSnapshotUpperMs bool
}

// SetKeysMode sets the shape of the keys listings answered from now on.
func (s *Server) SetKeysMode(m KeysMode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keysMode = m
}

// keyItem is one entry of the keys listing (asset-index-cache.ts:65-70).
type keyItem struct {
	Key         string  `json:"key"`
	ContentHash *string `json:"contentHash"` // null for a row without one
	Size        int64   `json:"size"`
	UploadedAt  int64   `json:"uploadedAt"`
}

// cacheTTL is the lifetime reported in cacheExpiresAt (constants.ts:25,
// asset-index-cache.ts:318).
const cacheTTL = 6 * time.Hour

// serveKeys lists the stored objects uploaded after since (all without
// it), newest first.
func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request) {
	tok, ok := keysBearer(r)
	if !ok { // assets.ts:268-270
		writeError(w, http.StatusUnauthorized, "Missing Authorization bearer token", "")
		return
	}
	if s.verifyAccess(tok) != nil { // assets.ts:272-276
		writeError(w, http.StatusUnauthorized, "Invalid or expired JWT token", "")
		return
	}
	var since int64 // 0: a full listing (assets.ts:291-299)
	if v, ok := jsParseInt(r.URL.Query().Get("since")); ok && v > 0 {
		since = v
	}

	s.mu.Lock()
	now := s.now()
	mode := s.keysMode
	// Every object stored so far is at or below the snapshot, and storeLocked
	// puts every later one above it.
	upper := max(now.UnixMilli(), s.lastUploaded)
	s.lastUploaded = upper
	items := make([]keyItem, 0, len(s.objects))
	for _, o := range s.objects { // asset-index-cache.ts:344-352, 713
		if o.UploadedAt > since && o.UploadedAt <= upper {
			it := keyItem{Key: o.Key, Size: o.Size, UploadedAt: o.UploadedAt}
			if o.ContentHash != "" {
				h := o.ContentHash
				it.ContentHash = &h
			}
			items = append(items, it)
		}
	}
	s.mu.Unlock()

	sort.Slice(items, func(i, j int) bool { // asset-index-cache.ts:332-342
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
	doc := map[string]any{ // asset-index-cache.ts:298-330
		"keys":            keys,
		"items":           items,
		"total":           len(items),
		"refreshedAt":     iso(now),
		"cacheExpiresAt":  iso(now.Add(cacheTTL)),
		"cached":          mode.Cached,
		"incremental":     since > 0,
		"snapshotUpperAt": iso(time.UnixMilli(upper)),
		"snapshotUpperMs": upper,
	}
	if mode.Cached && mode.OmitSnapshotUpperMs {
		delete(doc, "snapshotUpperMs")
	}
	if mode.Degraded {
		doc["degraded"] = true
	}
	writeJSON(w, http.StatusOK, doc)
}

// jsParseInt reads v as JavaScript's parseInt(v, 10) does: leading white
// space, an optional sign, then as many decimal digits as there are. It
// reports false where parseInt gives NaN; a value past int64 saturates.
func jsParseInt(v string) (int64, bool) {
	v = strings.TrimLeftFunc(v, func(r rune) bool { // JavaScript's white space
		return r == '\ufeff' || (unicode.IsSpace(r) && r != '\u0085')
	})
	neg := false
	if v != "" && (v[0] == '+' || v[0] == '-') {
		neg = v[0] == '-'
		v = v[1:]
	}
	var n int64
	digits := 0
	for ; digits < len(v) && v[digits] >= '0' && v[digits] <= '9'; digits++ {
		d := int64(v[digits] - '0')
		if n > (math.MaxInt64-d)/10 {
			n = math.MaxInt64
			continue
		}
		n = n*10 + d
	}
	if digits == 0 {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}
