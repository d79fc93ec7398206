package assets

import (
	"fmt"
	"path"
	"strings"
)

// MaxAssetBytes is the server's size limit for one asset, 200 MiB.
const MaxAssetBytes = 200 << 20

// KeyPrefix starts every asset key on the server.
const KeyPrefix = "assets/"

// Asset describes one captured resource as the asset-sync API knows it. Its
// JSON form is the "context" document of a pending entry (SPEC §6).
type Asset struct {
	Key          string `json:"key"`           // KeyPrefix + RelativePath
	RelativePath string `json:"relative_path"` // the URL path without its leading "/"
	FileName     string `json:"file_name"`     // the last segment of the path
	ContentHash  string `json:"content_hash"`  // lower-case hex SHA-256 of the bytes
	ContentType  string `json:"content_type"`  // from the extension, see ContentTypeByName
	Size         int64  `json:"file_size"`     // bytes, 0 < Size <= MaxAssetBytes
}

// NewAsset derives an asset's names from the decoded path of its game URL as SPEC §4 says:
// urlPath is the URL's path without its query (net/url's URL.Path), size and contentHash
// describe the bytes. It returns an error when the path is not capturable (CapturablePath) or
// the result would not pass Validate.
func NewAsset(urlPath string, size int64, contentHash string) (Asset, error) {
	if !CapturablePath(urlPath) {
		return Asset{}, fmt.Errorf("%w: path %q is not capturable", ErrInvalidAsset, urlPath)
	}
	rel := urlPath[1:]
	a := Asset{
		Key:          keyOf(urlPath),
		RelativePath: rel,
		FileName:     path.Base(rel),
		ContentHash:  contentHash,
		ContentType:  ContentTypeByName(rel),
		Size:         size,
	}
	if err := a.Validate(); err != nil {
		return Asset{}, err
	}
	return a, nil
}

// keyOf is the key of a capturable urlPath (SPEC §4).
func keyOf(urlPath string) string { return KeyPrefix + urlPath[1:] }

// CapturablePath reports whether a decoded URL path may become a key (SPEC §4): it starts
// with "/" and holds no "?", "#", NUL, CR, LF or backslash, no empty or "." segment and no
// "..", which the server refuses anywhere in a key, so that each such path has a key of its
// own. An
// encoded "%3F" decodes to "?"; cutting there would file /a.js%3Fx.png under a.js's key, so
// such paths are passed to the client untouched and never captured.
func CapturablePath(p string) bool {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#\\\x00\r\n") || strings.Contains(p, "..") {
		return false
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// contentTypes maps the extensions SPEC §4 names to their media types.
var contentTypes = map[string]string{
	"png":  "image/png",
	"jpg":  "image/jpeg",
	"jpeg": "image/jpeg",
	"gif":  "image/gif",
	"webp": "image/webp",
	"json": "application/json",
	"mp3":  "audio/mpeg",
	"mp4":  "video/mp4",
}

// ContentTypeByName returns the media type for a file name or path by its
// extension (case-insensitive), application/octet-stream when unknown.
func ContentTypeByName(name string) string {
	ext := strings.ToLower(strings.TrimPrefix(path.Ext(name), "."))
	if ct, ok := contentTypes[ext]; ok {
		return ct
	}
	return "application/octet-stream"
}

// Validate reports what would make the server refuse the asset outright, so
// that such an asset costs no request.
func (a Asset) Validate() error {
	switch {
	case a.RelativePath == "" || a.Key == "":
		return fmt.Errorf("%w: empty path", ErrInvalidAsset)
	case strings.Contains(a.Key, "..") || strings.Contains(a.RelativePath, ".."):
		return fmt.Errorf("%w: path holds \"..\"", ErrInvalidAsset) // refused by the server
	case a.FileName == "":
		return fmt.Errorf("%w: no file name", ErrInvalidAsset)
	case !isSHA256Hex(a.ContentHash):
		return fmt.Errorf("%w: content hash is not lower-case hex SHA-256", ErrInvalidAsset)
	case a.Size <= 0 || a.Size > MaxAssetBytes:
		return fmt.Errorf("%w: size %d outside (0, %d]", ErrInvalidAsset, a.Size, MaxAssetBytes)
	}
	return nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
