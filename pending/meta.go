package pending

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// Meta is an entry's .json file, field for field as SPEC §6 names them.
// Times are Unix seconds; Context is the JSON document of a Context, kept as a string.
type Meta struct {
	ID            string            `json:"id"`
	TargetURL     string            `json:"target_url"`
	Headers       map[string]string `json:"headers"`
	CreatedAt     int64             `json:"created_at"`
	AttemptCount  int               `json:"attempt_count"`
	LastAttemptAt int64             `json:"last_attempt_at"`
	LastError     string            `json:"last_error"`
	FilePath      string            `json:"file_path"`
	Context       string            `json:"context"`
}

// Context describes the asset an entry holds: the stage 1 handshake body (SPEC §5), except that
// file_size is a JSON number here and a decimal string on the wire.
type Context struct {
	RelativePath string `json:"relative_path"`
	Key          string `json:"key"`
	FileSize     int64  `json:"file_size"`
	ContentHash  string `json:"content_hash"`
	ContentType  string `json:"content_type"`
	FileName     string `json:"file_name"`
}

// Entry is one pending upload as the store reports it. Meta.Context is the raw string; the
// Context field, which shadows it, is its decoded form.
type Entry struct {
	Meta
	Context Context
	// NotBefore is a Retry-After hint: the retry service should not send before it. It lives
	// only in memory (SPEC §6 has no field for it), so it is zero after a restart.
	NotBefore time.Time
}

// Created returns CreatedAt as a time.
func (e Entry) Created() time.Time { return time.Unix(e.CreatedAt, 0) }

// LastAttempt returns LastAttemptAt as a time, zero when there was no attempt.
func (e Entry) LastAttempt() time.Time {
	if e.LastAttemptAt == 0 {
		return time.Time{}
	}
	return time.Unix(e.LastAttemptAt, 0)
}

const (
	// maxMetaBytes bounds a .json file; a larger one is treated as corrupt rather than read
	// into memory.
	maxMetaBytes = 1 << 20
	// maxErrorBytes bounds last_error (a status and a body excerpt is what it is for).
	maxErrorBytes = 4096
)

// secretHeaders are never written to disk (SPEC §6); the session's are attached at send time.
var secretHeaders = map[string]bool{
	"authorization":       true,
	"cookie":              true,
	"proxy-authorization": true,
	"x-upload-token":      true,
	"x-dataset-token":     true,
}

// stripSecrets returns a copy of h without the secret headers, compared case-insensitively.
// It never returns nil, so that the JSON holds {} rather than null.
func stripSecrets(h map[string]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if !secretHeaders[strings.ToLower(strings.TrimSpace(k))] {
			out[k] = v
		}
	}
	return out
}

// hasSecrets reports whether h holds a header stripSecrets would remove.
func hasSecrets(h map[string]string) bool {
	for k := range h {
		if secretHeaders[strings.ToLower(strings.TrimSpace(k))] {
			return true
		}
	}
	return false
}

// validID reports whether id is a UUID in its canonical form (8-4-4-4-12 lower-case hex digits),
// the only form the store writes, so that one id names one pair of files even where names are
// case-insensitive.
func validID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch i {
		case 8, 13, 18, 23:
			if id[i] != '-' {
				return false
			}
		default:
			if !isLowerHex(id[i]) {
				return false
			}
		}
	}
	return true
}

// validHash reports whether h is a lower-case hex SHA-256.
func validHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if !isLowerHex(h[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(b byte) bool { return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' }

// binName is the only file_path the store accepts for id.
func binName(id string) string { return id + ".bin" }

// checkContext reports what is wrong with c, or nil.
func checkContext(c Context) error {
	switch {
	case c.Key == "":
		return fmt.Errorf("context has no key")
	case !validHash(c.ContentHash):
		return fmt.Errorf("context content_hash %q is not a lower-case hex SHA-256", c.ContentHash)
	case c.FileSize < 0:
		return fmt.Errorf("context file_size %d is negative", c.FileSize)
	}
	return nil
}

// decodeMeta parses and checks a .json file named stem+".json". Every failure means the entry is
// corrupt; the error says why, for the log.
func decodeMeta(stem string, data []byte) (Meta, Context, error) {
	if len(data) > maxMetaBytes {
		return Meta{}, Context{}, fmt.Errorf("json is %d bytes, over the %d byte limit", len(data), maxMetaBytes)
	}
	m, c, fast := fastDecodeMeta(data)
	if !fast {
		m = Meta{}
		if err := json.Unmarshal(data, &m); err != nil {
			return m, Context{}, fmt.Errorf("bad json: %w", err)
		}
	}
	if !validID(m.ID) {
		return m, Context{}, fmt.Errorf("id %q is not a UUID", m.ID)
	}
	if m.ID != stem {
		return m, Context{}, fmt.Errorf("id %q does not match file name %q", m.ID, stem+".json")
	}
	// file_path is relative to the store and must name <id>.bin there; an absolute path or one
	// that climbs out is refused, so the store never follows a path out of its folder.
	p := filepath.FromSlash(m.FilePath)
	if m.FilePath == "" || filepath.IsAbs(p) || strings.HasPrefix(m.FilePath, "/") ||
		filepath.VolumeName(p) != "" || filepath.Clean(p) != binName(m.ID) {
		return m, Context{}, fmt.Errorf("file_path %q does not resolve to %s in the store", m.FilePath, binName(m.ID))
	}
	if !fast {
		c = Context{}
		if err := json.Unmarshal([]byte(m.Context), &c); err != nil {
			return m, c, fmt.Errorf("bad context json: %w", err)
		}
	}
	if err := checkContext(c); err != nil {
		return m, c, err
	}
	if m.AttemptCount < 0 {
		return m, c, fmt.Errorf("attempt_count %d is negative", m.AttemptCount)
	}
	return m, c, nil
}

// encodeMeta renders m as its .json file. HTML escaping is off so that URLs keep their & and
// the file stays in fastDecodeMeta's subset.
func encodeMeta(m Meta) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// encodeContext renders c as the string kept in Meta.Context.
func encodeContext(c Context) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
