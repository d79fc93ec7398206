package pending

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// The .json formats, as encoding/json reads and writes them. Written: FUSOU's format
// (pending_store.rs PendingMeta, with the tagged UploadContext of uploader.rs in context) plus
// last_error. Read: that, FUSOU's older three-field Asset, the seed's flat context without a hash,
// and the flat context with content_hash, content_type and file_name of this program's earlier
// versions (SPEC §6; docs/FORMATS.md).

// metaFile is a .json file. Option fields are pointers, so that null is written and read as
// serde does.
type metaFile struct {
	ID            string            `json:"id"`
	TargetURL     string            `json:"target_url"`
	Headers       map[string]string `json:"headers"`
	CreatedAt     int64             `json:"created_at"`
	AttemptCount  int               `json:"attempt_count"`
	LastAttemptAt *int64            `json:"last_attempt_at"`
	FilePath      string            `json:"file_path"`
	Context       *string           `json:"context"`
	// LastError is ours; FUSOU never writes it, so its presence marks a file this program wrote.
	LastError *string `json:"last_error"`
}

// taggedAsset and assetFile are what the store writes in context.
type taggedAsset struct {
	Asset assetFile `json:"Asset"`
}

type assetFile struct {
	RelativePath string  `json:"relative_path"`
	Key          string  `json:"key"`
	FileSize     int64   `json:"file_size"`
	DatasetID    *string `json:"dataset_id"`
	ContentType  *string `json:"content_type"`
}

// contextDoc reads every context shape in one pass: a tagged variant, or the flat asset object.
type contextDoc struct {
	Asset    *contextFields  `json:"Asset"`
	Snapshot json.RawMessage `json:"Snapshot"`
	Custom   json.RawMessage `json:"Custom"`
	contextFields
}

// contextFields are the asset fields of every format. Only the flat context of this program's
// earlier versions has content_hash; its file_name was always relative_path's last segment, which
// is where FileName comes from now.
type contextFields struct {
	RelativePath string  `json:"relative_path"`
	Key          string  `json:"key"`
	FileSize     int64   `json:"file_size"`
	DatasetID    *string `json:"dataset_id"`
	ContentType  *string `json:"content_type"`
	ContentHash  string  `json:"content_hash"`
}

// decoded is what a .json says about its entry.
type decoded struct {
	meta Meta
	// ctx is the asset; its ContentHash is empty when the file holds no hash (the seed's
	// format), for the caller to compute from the .bin.
	ctx Context
	// unsupported is the entry's kind when it is not an asset (KindSnapshot, ...).
	unsupported string
	// ours: the file has our last_error field, so this program wrote it.
	ours bool
	// tagged: the context is FUSOU's tagged Asset (without a flat content_hash), which the app
	// reads as it is.
	tagged bool
}

// decodeMeta parses and checks a .json file named stem+".json". Every error means the entry is
// corrupt and says why, for the log.
func decodeMeta(stem string, data []byte) (decoded, error) {
	var d decoded
	if len(data) > maxMetaBytes {
		return d, fmt.Errorf("json is %d bytes, over the %d byte limit", len(data), maxMetaBytes)
	}
	var f metaFile
	if err := json.Unmarshal(data, &f); err != nil {
		return d, fmt.Errorf("bad json: %w", err)
	}
	d.meta = Meta{ID: f.ID, TargetURL: f.TargetURL, Headers: f.Headers, CreatedAt: f.CreatedAt,
		AttemptCount: f.AttemptCount, FilePath: f.FilePath}
	if f.LastAttemptAt != nil {
		d.meta.LastAttemptAt = *f.LastAttemptAt
	}
	if f.LastError != nil {
		d.meta.LastError, d.ours = *f.LastError, true
	}
	if err := checkMeta(stem, d.meta); err != nil {
		return d, err
	}
	if f.Context == nil {
		d.unsupported = KindNoContext
		return d, nil
	}
	d.meta.Context = *f.Context
	var err error
	d.ctx, d.unsupported, d.tagged, err = decodeContext(*f.Context)
	if err != nil || d.unsupported != "" {
		return d, err
	}
	if h := headerHash(f.Headers); h != "" {
		if d.ctx.ContentHash != "" && d.ctx.ContentHash != h {
			return d, fmt.Errorf("content-hash header %q and context content_hash %q differ", h, d.ctx.ContentHash)
		}
		d.ctx.ContentHash = h
	}
	if d.ctx.ContentHash == "" {
		return d, checkFields(d.ctx) // the seed's format: the caller hashes the .bin
	}
	return d, checkContext(d.ctx)
}

// checkMeta checks the fields every kind of entry needs.
func checkMeta(stem string, m Meta) error {
	switch {
	case !validID(m.ID):
		return fmt.Errorf("id %q is not a UUID", m.ID)
	case m.ID != stem:
		return fmt.Errorf("id %q does not match file name %q", m.ID, stem+".json")
	case !namesBin(m.FilePath, m.ID):
		// The .bin read is always <store>/<id>.bin, so a file_path naming anything else
		// means the files do not belong together.
		return fmt.Errorf("file_path %q does not end in %s", m.FilePath, binName(m.ID))
	case m.CreatedAt < 0:
		return fmt.Errorf("created_at %d is negative", m.CreatedAt)
	case m.AttemptCount < 0:
		return fmt.Errorf("attempt_count %d is negative", m.AttemptCount)
	case m.LastAttemptAt < 0:
		return fmt.Errorf("last_attempt_at %d is negative", m.LastAttemptAt)
	}
	return nil
}

// decodeContext reads a context string: an asset (tagged says whether in FUSOU's tagged form),
// or the kind of an entry that is not one.
func decodeContext(s string) (c Context, unsupported string, tagged bool, err error) {
	var doc contextDoc
	if err := json.Unmarshal([]byte(s), &doc); err != nil {
		return c, "", false, fmt.Errorf("bad context json: %w", err)
	}
	var f contextFields
	switch {
	case doc.Asset != nil:
		f, tagged = *doc.Asset, doc.Asset.ContentHash == ""
	case doc.Snapshot != nil:
		return c, KindSnapshot, false, nil
	case doc.Custom != nil:
		return c, KindCustom, false, nil
	case doc.Key != "":
		f = doc.contextFields
	default:
		return c, "", false, fmt.Errorf("context is neither an Asset nor an asset object")
	}
	c = Context{RelativePath: f.RelativePath, Key: f.Key, FileSize: f.FileSize, ContentHash: f.ContentHash}
	if f.DatasetID != nil {
		c.DatasetID = *f.DatasetID
	}
	if f.ContentType != nil {
		c.ContentType = *f.ContentType
	}
	if c.RelativePath != "" {
		c.FileName = path.Base(c.RelativePath)
		if c.ContentType == "" {
			c.ContentType = contentTypeByName(c.FileName)
		}
	}
	return c, "", tagged, nil
}

// contentTypes are SPEC §4's media types by extension, for contexts written without one.
var contentTypes = map[string]string{
	"png":  "image/png",
	"jpg":  "image/jpeg",
	"jpeg": "image/jpeg",
	"gif":  "image/gif",
	"webp": "image/webp",
	"bmp":  "image/bmp",
	"json": "application/json",
	"mp3":  "audio/mpeg",
	"mp4":  "video/mp4",
}

func contentTypeByName(name string) string {
	if ct, ok := contentTypes[strings.ToLower(strings.TrimPrefix(path.Ext(name), "."))]; ok {
		return ct
	}
	return "application/octet-stream"
}
