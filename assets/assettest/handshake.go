package assettest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxHandshakeBody bounds the stage-1 JSON body.
const maxHandshakeBody = 64 << 10

// tokenClaims is what an upload token carries, signed.
type tokenClaims struct {
	Key          string `json:"key"`
	RelativePath string `json:"relative_path"`
	DeclaredSize int64  `json:"declared_size"`
	FileName     string `json:"file_name"`
	ContentHash  string `json:"content_hash"`
	ExpiresAt    int64  `json:"exp"` // Unix milliseconds
	Serial       uint64 `json:"n"`
}

// serveHandshake is stage 1: validate the asset's description and hand out
// a signed upload token.
func (s *Server) serveHandshake(w http.ResponseWriter, r *http.Request) {
	if !s.bearerOK(w, r) {
		return
	}
	var body map[string]json.RawMessage
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxHandshakeBody)).Decode(&body); err != nil || body == nil {
		writeError(w, http.StatusBadRequest, "body is not a JSON object", "")
		return
	}
	if !s.datasetTokenOK(w, r, body) {
		return
	}

	key, ok := sanitizeKey(jsonString(body, "key"))
	if !ok {
		writeError(w, http.StatusBadRequest, "key missing or invalid", "")
		return
	}
	relPath, ok := sanitizeKey(jsonString(body, "relative_path"))
	if !ok {
		writeError(w, http.StatusBadRequest, "relative_path missing or invalid", "")
		return
	}
	size, ok := parseSize(jsonString(body, "file_size"))
	if !ok {
		writeError(w, http.StatusBadRequest, "file_size must be a decimal string in (0, 200 MiB]", "")
		return
	}
	hash := strings.TrimSpace(jsonString(body, "content_hash"))
	if !isSHA256Hex(hash) {
		writeError(w, http.StatusBadRequest, "content_hash must be 64 lower-case hex digits", "")
		return
	}
	if strings.TrimSpace(jsonString(body, "content_type")) == "" {
		writeError(w, http.StatusBadRequest, "content_type missing", "")
		return
	}
	fileName := sanitizeFileName(jsonString(body, "file_name"))

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range []string{fileName, key, relPath} {
		if !s.allowedExt[extension(name)] {
			writeError(w, http.StatusUnsupportedMediaType, "file type not allowed", "")
			return
		}
	}
	if o, ok := s.objects[key]; ok && o.ContentHash == hash {
		writeError(w, http.StatusConflict, "asset already stored with this content_hash", "")
		return
	}

	ttl := s.tokenTTL
	if ttl <= 0 {
		ttl = realTokenTTL(size)
	}
	now := s.now()
	s.tokenSerial++
	claims := tokenClaims{
		Key:          key,
		RelativePath: relPath,
		DeclaredSize: size,
		FileName:     fileName,
		ContentHash:  hash,
		ExpiresAt:    now.Add(ttl).UnixMilli(),
		Serial:       s.tokenSerial,
	}
	uploadURL := UploadPath
	if !s.relativeURL {
		uploadURL = s.URL + UploadPath
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"uploadUrl": uploadURL,
		"token":     s.sign(claims),
		"expiresAt": now.Add(ttl).UTC().Format(time.RFC3339Nano),
		"fields": map[string]any{
			"key":           key,
			"relative_path": relPath,
			"declared_size": size,
			"file_name":     fileName,
		},
	})
}

// datasetTokenOK checks the dataset token when SetDatasetTokens asked for
// one, answering 401 when it is missing or unknown.
func (s *Server) datasetTokenOK(w http.ResponseWriter, r *http.Request, body map[string]json.RawMessage) bool {
	s.mu.Lock()
	want := s.datasetTokens
	s.mu.Unlock()
	if len(want) == 0 {
		return true
	}
	tok := strings.TrimSpace(r.Header.Get("X-Dataset-Token"))
	if tok == "" {
		tok = strings.TrimSpace(jsonString(body, "dataset_token"))
	}
	switch {
	case tok == "":
		writeError(w, http.StatusUnauthorized, "dataset token required", "")
		return false
	case !want[tok]:
		writeError(w, http.StatusUnauthorized, "dataset token invalid or expired", "")
		return false
	}
	return true
}

// realTokenTTL is the real server's upload-token lifetime: 30 s per MiB
// plus 300 s, kept between 1 min and 1 h.
func realTokenTTL(size int64) time.Duration {
	secs := (size*30+(1<<20)-1)>>20 + 300
	return time.Duration(min(max(secs, 60), 3600)) * time.Second
}

// sign encodes claims as base64url(JSON) "." base64url(HMAC-SHA256).
func (s *Server) sign(c tokenClaims) string {
	payload, _ := json.Marshal(c) // plain struct: cannot fail
	p := base64.RawURLEncoding.EncodeToString(payload)
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(p))
	return p + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

var (
	errTokenInvalid = errors.New("upload token invalid")
	errTokenExpired = errors.New("upload token expired")
)

// verify checks an upload token's signature, expiry and serial.
func (s *Server) verify(tok string) (tokenClaims, error) {
	var c tokenClaims
	p, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return c, errTokenInvalid
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return c, errTokenInvalid
	}
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(p))
	if !hmac.Equal(got, m.Sum(nil)) {
		return c, errTokenInvalid
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil || json.Unmarshal(payload, &c) != nil {
		return c, errTokenInvalid
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Serial <= s.validAfter || s.now().UnixMilli() > c.ExpiresAt {
		return c, errTokenExpired
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

// sanitizeKey normalises a key or relative path as the real server does:
// "\" becomes "/", leading slashes go, and "" or anything holding ".." is
// refused.
func sanitizeKey(v string) (string, bool) {
	v = strings.TrimLeft(strings.ReplaceAll(v, `\`, "/"), "/")
	if v == "" || strings.Contains(v, "..") {
		return "", false
	}
	return v, true
}

// sanitizeFileName keeps the last path segment, trimmed, without control
// characters; "" when nothing is left.
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

// extension is the lower-case text after the last dot, or "".
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
