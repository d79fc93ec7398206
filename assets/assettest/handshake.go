package assettest

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// maxHandshakeBody bounds the stage-1 JSON body.
const maxHandshakeBody = 64 << 10

// serveHandshake is stage 1: check the tokens, validate the asset's
// description and hand out a signed upload token.
func (s *Server) serveHandshake(w http.ResponseWriter, r *http.Request) {
	tok, ok := uploadBearer(r)
	if !ok { // upload.ts:102-108
		writeError(w, http.StatusUnauthorized, "Missing Authorization bearer token", "AUTH_MISSING")
		return
	}
	if s.verifyAccess(tok) != nil { // upload.ts:109-112
		writeError(w, http.StatusUnauthorized, "Invalid or expired JWT token", "")
		return
	}
	// Any JSON will do (upload.ts:114-120); fields are read off an object
	// only, as JavaScript reads undefined off anything else.
	raw, err := readJSON(w, r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "Invalid JSON body", "")
		return
	}
	var body map[string]json.RawMessage
	json.Unmarshal(raw, &body) // a non-object leaves body nil: no fields

	// The dataset token is always required (assets.ts:69): the header,
	// else the body's field (utils.ts:642-649), then utils.ts:651-670.
	dataset := strings.TrimSpace(r.Header.Get("X-Dataset-Token"))
	if dataset == "" {
		dataset = strings.TrimSpace(jsonString(body, "dataset_token"))
	}
	if dataset == "" {
		writeError(w, http.StatusUnauthorized, "dataset_token is required", "")
		return
	}
	user, err := s.verifyDataset(dataset)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "Invalid or expired dataset_token", "")
		return
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		// The validator reads body.key of null and throws; Hono's error
		// handler answers (app.ts:192-200).
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": true, "message": "Internal server error"})
		return
	}

	key, ok := sanitizeKey(jsonString(body, "key")) // assets.ts:75-78
	if !ok {
		writeError(w, http.StatusBadRequest, "Invalid or empty key", "")
		return
	}
	relPath, ok := sanitizeKey(jsonString(body, "relative_path")) // assets.ts:80-85
	if !ok {
		writeError(w, http.StatusBadRequest, "Invalid relative_path", "")
		return
	}
	// assets.ts:87-96 wants a JSON string holding a number in (0, 200 MiB];
	// stricter here, decimal digits only (SPEC §5).
	size, ok := parseSize(jsonString(body, "file_size"))
	if !ok {
		writeError(w, http.StatusBadRequest, "Invalid file size", "")
		return
	}
	// assets.ts:98-102 wants it non-empty; stricter here, lower-case hex
	// SHA-256 (SPEC §4).
	hash := strings.TrimSpace(jsonString(body, "content_hash"))
	if !isSHA256Hex(hash) {
		writeError(w, http.StatusBadRequest, "content_hash (SHA-256) is required", "")
		return
	}
	// Ignored by the real server; SPEC §4 has the client send it.
	if strings.TrimSpace(jsonString(body, "content_type")) == "" {
		writeError(w, http.StatusBadRequest, "content_type missing", "")
		return
	}
	fileName := sanitizeFileName(jsonString(body, "file_name"))

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range []string{fileName, key, relPath} { // assets.ts:104-114
		if !s.allowedExt[extension(name)] {
			writeError(w, http.StatusUnsupportedMediaType, "This file type is not allowed for upload", "")
			return
		}
	}
	if o, ok := s.objects[key]; ok && o.ContentHash == hash { // assets.ts:117-131
		writeError(w, http.StatusConflict, "Asset already exists and content has not changed", "")
		return
	}

	ttl := s.tokenTTL
	if ttl <= 0 {
		ttl = realTokenTTL(size)
	}
	now := s.now()
	s.tokenSerial++
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"key":           key,
		"relative_path": relPath,
		"declared_size": size,
		"file_name":     fileName,
		"content_hash":  hash,
		"user_id":       user, // the dataset token's sub (upload.ts:153)
		"exp":           jwt.NewNumericDate(now.Add(ttl)),
		"serial":        s.tokenSerial, // the fake's own, for ExpireUploadTokens
	}).SignedString(s.uploadSecret)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "sign the upload token: "+err.Error(), "")
		return
	}
	uploadURL := UploadPath
	if !s.relativeURL {
		uploadURL = s.URL + UploadPath
	}
	writeJSON(w, http.StatusOK, map[string]any{ // upload.ts:217-222
		"uploadUrl": uploadURL,
		"token":     token,
		"expiresAt": now.Add(ttl).UTC().Format("2006-01-02T15:04:05.000Z"),
		"fields": map[string]any{
			"key":           key,
			"relative_path": relPath,
			"declared_size": size,
			"file_name":     fileName,
		},
	})
}

// readJSON reads a request body that must be one JSON value.
func readJSON(w http.ResponseWriter, r *http.Request) (json.RawMessage, error) {
	var raw json.RawMessage
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxHandshakeBody))
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON value")
	}
	return raw, nil
}

// realTokenTTL is the real server's upload-token lifetime: 30 s per MiB
// plus 300 s, kept between 1 min and 1 h (upload.ts:176-192).
func realTokenTTL(size int64) time.Duration {
	secs := (size*30+(1<<20)-1)>>20 + 300
	return time.Duration(min(max(secs, 60), 3600)) * time.Second
}

var errUploadTokenVoid = errors.New("upload token voided by ExpireUploadTokens")

// verifyUpload checks an upload token's signature and expiry, with no
// leeway (utils.ts:137-148), and its serial.
func (s *Server) verifyUpload(tok string) (jwt.MapClaims, error) {
	c, err := s.verifyHMAC(tok, s.uploadSecret)
	if err != nil {
		return nil, err
	}
	serial, _ := c["serial"].(float64)
	s.mu.Lock()
	defer s.mu.Unlock()
	if uint64(serial) <= s.validAfter {
		return nil, errUploadTokenVoid
	}
	return c, nil
}

// jsonString returns body[name] if it is a JSON string, else "".
func jsonString(body map[string]json.RawMessage, name string) string {
	var v string
	if json.Unmarshal(body[name], &v) != nil {
		return ""
	}
	return v
}

// sanitizeKey normalises a key or relative path as the real server does
// (utils.ts:394-399): "\" becomes "/", leading slashes go, and "" or
// anything holding ".." is refused.
func sanitizeKey(v string) (string, bool) {
	v = strings.TrimLeft(strings.ReplaceAll(v, `\`, "/"), "/")
	if v == "" || strings.Contains(v, "..") {
		return "", false
	}
	return v, true
}

// sanitizeFileName keeps the last path segment, trimmed, without control
// characters; "" when nothing is left (utils.ts:402-409).
func sanitizeFileName(v string) string {
	v = strings.ReplaceAll(v, `\`, "/")
	v = strings.TrimSpace(v[strings.LastIndex(v, "/")+1:])
	return strings.Map(func(r rune) rune {
		if r < 0x20 {
			return -1
		}
		return r
	}, v)
}

// extension is the lower-case text after the last dot, or "" when there is
// none or nothing follows it (utils.ts:365-371).
func extension(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	i := strings.LastIndex(name, ".")
	if i < 0 {
		return ""
	}
	return name[i+1:]
}

// parseSize accepts decimal digits only, for a size in (0, MaxUploadBytes].
func parseSize(v string) (int64, bool) {
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n > MaxUploadBytes {
		return 0, false
	}
	return n, true
}

func isSHA256Hex(v string) bool {
	if len(v) != 64 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
