package pending

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
)

// This file is a second, strict reader of the .json files, written from FUSOU's Rust types rather
// than from this package's: serde's PendingMeta (packages/fusou-upload/src/pending_store.rs) and
// UploadContext::Asset (uploader.rs). If it accepts what the store writes, the FUSOU app can read
// it. It is as strict as serde_json: field names match exactly, a field may not appear twice, u64
// and u32 are non-negative integers in range, String is a string, Option is null or its type,
// HashMap<String, String> is an object of strings; unknown top-level fields are allowed (serde
// ignores them). The Asset object must hold exactly its five fields, as this program writes them.

// fusouMeta is PendingMeta as the FUSOU app would read it.
type fusouMeta struct {
	ID            string
	TargetURL     string
	Headers       map[string]string
	CreatedAt     uint64
	AttemptCount  uint32
	LastAttemptAt *uint64
	FilePath      string
	Context       *string
}

// fusouAsset is UploadContext::Asset.
type fusouAsset struct {
	RelativePath string
	Key          string
	FileSize     uint64
	DatasetID    *string
	ContentType  *string
}

// decodeFUSOUMeta reads data as serde_json would read a PendingMeta.
func decodeFUSOUMeta(data []byte) (fusouMeta, error) {
	var m fusouMeta
	fields, err := strictObject(data)
	if err != nil {
		return m, err
	}
	required := []string{"id", "target_url", "headers", "created_at", "attempt_count", "file_path"}
	for _, name := range required {
		if _, ok := fields[name]; !ok {
			return m, fmt.Errorf("missing field %q", name)
		}
	}
	if err := firstError(
		jsonString(fields["id"], &m.ID),
		jsonString(fields["target_url"], &m.TargetURL),
		jsonStringMap(fields["headers"], &m.Headers),
		jsonUint(fields["created_at"], 64, &m.CreatedAt),
		jsonUint32(fields["attempt_count"], &m.AttemptCount),
		jsonString(fields["file_path"], &m.FilePath),
	); err != nil {
		return m, err
	}
	if raw, ok := fields["last_attempt_at"]; ok && !isNull(raw) { // #[serde(default)]
		m.LastAttemptAt = new(uint64)
		if err := jsonUint(raw, 64, m.LastAttemptAt); err != nil {
			return m, fmt.Errorf("last_attempt_at: %w", err)
		}
	}
	if raw, ok := fields["context"]; ok && !isNull(raw) { // Option: missing is None too
		m.Context = new(string)
		if err := jsonString(raw, m.Context); err != nil {
			return m, fmt.Errorf("context: %w", err)
		}
	}
	return m, nil
}

// decodeFUSOUAsset reads a context string as serde_json would read an UploadContext, requiring
// the Asset variant with exactly its five fields.
func decodeFUSOUAsset(context string) (fusouAsset, error) {
	var a fusouAsset
	outer, err := strictObject([]byte(context))
	if err != nil {
		return a, err
	}
	if len(outer) != 1 || outer["Asset"] == nil {
		return a, fmt.Errorf("context is not the externally tagged Asset variant: %s", context)
	}
	fields, err := strictObject(outer["Asset"])
	if err != nil {
		return a, err
	}
	if len(fields) != 5 {
		return a, fmt.Errorf("Asset has %d fields, want exactly 5: %s", len(fields), outer["Asset"])
	}
	for _, name := range []string{"relative_path", "key", "file_size", "dataset_id", "content_type"} {
		if _, ok := fields[name]; !ok {
			return a, fmt.Errorf("Asset lacks %q", name)
		}
	}
	return a, firstError(
		jsonString(fields["relative_path"], &a.RelativePath),
		jsonString(fields["key"], &a.Key),
		jsonUint(fields["file_size"], 64, &a.FileSize),
		jsonOptionString(fields["dataset_id"], &a.DatasetID),
		jsonOptionString(fields["content_type"], &a.ContentType),
	)
}

// strictObject splits one JSON object into its fields, refusing duplicates and trailing data.
func strictObject(data []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %.40q", data)
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name := tok.(string)
		if _, dup := fields[name]; dup {
			return nil, fmt.Errorf("duplicate field %q", name)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("field %q: %w", name, err)
		}
		fields[name] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the object")
	}
	return fields, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func jsonString(raw json.RawMessage, v *string) error {
	if bytes.TrimSpace(raw)[0] != '"' {
		return fmt.Errorf("want a string, got %s", raw)
	}
	return json.Unmarshal(raw, v)
}

func jsonOptionString(raw json.RawMessage, v **string) error {
	if isNull(raw) {
		return nil
	}
	*v = new(string)
	return jsonString(raw, *v)
}

func jsonStringMap(raw json.RawMessage, v *map[string]string) error {
	fields, err := strictObject(raw)
	if err != nil {
		return fmt.Errorf("headers: %w", err)
	}
	*v = map[string]string{}
	for k, f := range fields {
		var s string
		if err := jsonString(f, &s); err != nil {
			return fmt.Errorf("header %q: %w", k, err)
		}
		(*v)[k] = s
	}
	return nil
}

// unsignedInteger is serde_json's grammar for an unsigned integer: no sign, fraction or exponent.
var unsignedInteger = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)

func jsonUint(raw json.RawMessage, bits int, v *uint64) error {
	s := string(bytes.TrimSpace(raw))
	if !unsignedInteger.MatchString(s) {
		return fmt.Errorf("want a non-negative integer, got %s", s)
	}
	n, err := strconv.ParseUint(s, 10, bits)
	*v = n
	return err
}

func jsonUint32(raw json.RawMessage, v *uint32) error {
	var n uint64
	err := jsonUint(raw, 32, &n)
	*v = uint32(n)
	return err
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
