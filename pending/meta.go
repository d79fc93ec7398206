package pending

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Meta is an entry's .json file (SPEC §6): the FUSOU desktop app's serde PendingMeta
// (packages/fusou-upload/src/pending_store.rs) plus our last_error. Times are Unix seconds;
// LastAttemptAt 0 means no attempt yet (null on disk). FilePath is the absolute path of the .bin
// in this store; Context is the JSON document of the upload context, kept as the string it is on
// disk.
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
// file_size is a JSON number here and a decimal string on the wire. On disk it is FUSOU's
// UploadContext::Asset, which has no content_hash or file_name: the hash lives in the
// "content-hash" header and FileName is the last segment of RelativePath.
type Context struct {
	RelativePath string `json:"relative_path"`
	Key          string `json:"key"`
	FileSize     int64  `json:"file_size"`
	ContentHash  string `json:"content_hash"`
	ContentType  string `json:"content_type"`
	FileName     string `json:"file_name"`
	// DatasetID is FUSOU's dataset_id, kept as read so that an imported entry loses nothing;
	// empty is null. This program sends the session's dataset token instead.
	DatasetID string `json:"dataset_id,omitempty"`
}

// Entry is one pending upload as the store reports it. Meta.Context is the raw string; the
// Context field, which shadows it, is its decoded form.
type Entry struct {
	Meta
	Context Context
	// NotBefore is a Retry-After hint: the retry service should not send before it. It lives
	// only in memory (SPEC §6 has no field for it), so it is zero after a restart.
	NotBefore time.Time
	// Unsupported names the context of an entry this program does not upload (KindSnapshot,
	// KindCustom or KindNoContext); empty for an asset. Such entries come only from
	// Store.Unsupported.
	Unsupported string
}

// Kinds of entries the store keeps but does not upload: FUSOU's other UploadContext variants,
// and a null context.
const (
	KindSnapshot  = "Snapshot"
	KindCustom    = "Custom"
	KindNoContext = "no context"
)

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
	// hashHeader is the header in which FUSOU keeps the SHA-256 of the .bin.
	hashHeader = "content-hash"
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
	out := make(map[string]string, len(h)+1)
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

// diskHeaders are the headers an entry of hash is written with: h without secrets, and with
// the hash under hashHeader alone (any other spelling of it is dropped).
func diskHeaders(h map[string]string, hash string) map[string]string {
	out := stripSecrets(h)
	for k := range out {
		if strings.EqualFold(strings.TrimSpace(k), hashHeader) {
			delete(out, k)
		}
	}
	out[hashHeader] = hash
	return out
}

// headerHash returns the content-hash header of h, in any letter case, or "".
func headerHash(h map[string]string) string {
	if v, ok := h[hashHeader]; ok {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(strings.TrimSpace(k), hashHeader) {
			return v
		}
	}
	return ""
}

// validID reports whether id is a UUID in its canonical form (8-4-4-4-12 lower-case hex digits),
// the form both programs write, so that one id names one pair of files even where names are
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

// binName is the file name of id's bytes.
func binName(id string) string { return id + ".bin" }

// namesBin reports whether filePath, absolute or relative, in either slash style, ends in
// <id>.bin. The path is never opened: it only has to agree with the entry's id.
func namesBin(filePath, id string) bool {
	last := filePath[strings.LastIndexAny(filePath, `/\`)+1:]
	return last == binName(id)
}

// checkContext reports what is wrong with c, or nil.
func checkContext(c Context) error {
	if err := checkFields(c); err != nil {
		return err
	}
	if !validHash(c.ContentHash) {
		return fmt.Errorf("content hash %q is not a lower-case hex SHA-256", c.ContentHash)
	}
	return nil
}

// checkFields is checkContext without the hash.
func checkFields(c Context) error {
	switch {
	case c.Key == "":
		return fmt.Errorf("context has no key")
	case c.FileSize < 0:
		return fmt.Errorf("context file_size %d is negative", c.FileSize)
	}
	return nil
}

// encodeMeta renders m as its .json file. HTML escaping is off so that URLs keep their &.
func encodeMeta(m Meta) ([]byte, error) {
	f := metaFile{
		ID:           m.ID,
		TargetURL:    m.TargetURL,
		Headers:      m.Headers,
		CreatedAt:    m.CreatedAt,
		AttemptCount: m.AttemptCount,
		FilePath:     m.FilePath,
		LastError:    &m.LastError,
	}
	if f.Headers == nil {
		f.Headers = map[string]string{} // serde's HashMap refuses null
	}
	if m.LastAttemptAt != 0 {
		f.LastAttemptAt = &m.LastAttemptAt
	}
	if m.Context != "" {
		f.Context = &m.Context
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// encodeContext renders c as the string kept in Meta.Context: FUSOU's tagged
// {"Asset":{...}} with exactly UploadContext::Asset's five fields.
func encodeContext(c Context) (string, error) {
	a := assetFile{RelativePath: c.RelativePath, Key: c.Key, FileSize: c.FileSize}
	if c.DatasetID != "" {
		a.DatasetID = &c.DatasetID
	}
	if c.ContentType != "" {
		a.ContentType = &c.ContentType
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(taggedAsset{Asset: a}); err != nil {
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
