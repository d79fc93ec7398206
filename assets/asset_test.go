package assets

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestNewAsset(t *testing.T) {
	h := hashOf([]byte("x"))
	tests := []struct {
		path string
		size int64
		hash string
		want Asset
		err  bool
	}{
		{path: "/kcs2/img/title/01.png", size: 12345, hash: h, want: Asset{
			Key: "assets/kcs2/img/title/01.png", RelativePath: "kcs2/img/title/01.png", FileName: "01.png",
			ContentHash: h, ContentType: "image/png", Size: 12345}},
		{path: "/kcs2/resources/bgm/battle/001.MP3", size: 1, hash: h, want: Asset{
			Key: "assets/kcs2/resources/bgm/battle/001.MP3", RelativePath: "kcs2/resources/bgm/battle/001.MP3", FileName: "001.MP3",
			ContentHash: h, ContentType: "audio/mpeg", Size: 1}},
		{path: "/kcs2/js/main.js", size: 1, hash: h, want: Asset{
			Key: "assets/kcs2/js/main.js", RelativePath: "kcs2/js/main.js", FileName: "main.js",
			ContentHash: h, ContentType: "application/octet-stream", Size: 1}},
		{path: "/", size: 1, hash: h, err: true},
		{path: "/kcs2/img/", size: 1, hash: h, err: true},
		{path: "/kcs2/../etc/passwd.png", size: 1, hash: h, err: true},
		// Decoded paths of /kcs2/js/main.js%3Fx.png and /kcs2/img/title/01.png%23ZZZ.txt:
		// never cut at the "?" or "#" into another asset's key.
		{path: "/kcs2/js/main.js?x.png", size: 1, hash: h, err: true},
		{path: "/kcs2/img/title/01.png#ZZZ.txt", size: 1, hash: h, err: true},
		{path: "/kcs2/img/a\\b.png", size: 1, hash: h, err: true},
		{path: "/kcs2/img/a\x00.png", size: 1, hash: h, err: true},
		{path: "/kcs2/img/a\r\n.png", size: 1, hash: h, err: true},
		{path: "/kcs2/./img/a.png", size: 1, hash: h, err: true},
		{path: "/kcs2/img/..", size: 1, hash: h, err: true},
		{path: "kcs2/img/a.png", size: 1, hash: h, err: true},
		{path: "//kcs2/img/a.png", size: 1, hash: h, err: true},
		{path: "/kcs2//img/a.png", size: 1, hash: h, err: true},
		{path: "/kcs2/a.png", size: 0, hash: h, err: true},
		{path: "/kcs2/a.png", size: MaxAssetBytes + 1, hash: h, err: true},
		{path: "/kcs2/a.png", size: MaxAssetBytes, hash: h, want: Asset{
			Key: "assets/kcs2/a.png", RelativePath: "kcs2/a.png", FileName: "a.png", ContentHash: h, ContentType: "image/png", Size: MaxAssetBytes}},
		{path: "/kcs2/a.png", size: 1, hash: strings.ToUpper(h), err: true},
		{path: "/kcs2/a.png", size: 1, hash: "abc", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := NewAsset(tt.path, tt.size, tt.hash)
			if tt.err {
				if err == nil || !errors.Is(err, ErrInvalidAsset) {
					t.Fatalf("NewAsset = %+v, %v; want ErrInvalidAsset", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NewAsset = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestAssetContextJSON checks the JSON names of SPEC §6's context document.
func TestAssetContextJSON(t *testing.T) {
	a := mustAsset(t, "/kcs2/img/title/01.png", []byte("x"))
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"relative_path", "key", "file_size", "content_hash", "content_type", "file_name"} {
		if _, ok := m[k]; !ok {
			t.Errorf("context lacks %q: %s", k, b)
		}
	}
	if m["file_size"] != float64(1) {
		t.Errorf("file_size = %v, want the number 1", m["file_size"])
	}
	var back Asset
	if err := json.Unmarshal(b, &back); err != nil || back != a {
		t.Errorf("round trip = %+v, %v", back, err)
	}
}

func TestContentTypeByName(t *testing.T) {
	for name, want := range map[string]string{
		"a.png": "image/png", "a.JPG": "image/jpeg", "a.jpeg": "image/jpeg", "a.gif": "image/gif",
		"a.webp": "image/webp", "a.json": "application/json", "a.mp3": "audio/mpeg", "a.mp4": "video/mp4",
		"a.woff2": "application/octet-stream", "noext": "application/octet-stream", "dir.png/file": "application/octet-stream",
	} {
		if got := ContentTypeByName(name); got != want {
			t.Errorf("ContentTypeByName(%q) = %q, want %q", name, got, want)
		}
	}
}

// FuzzNewAsset: a key is "assets/" + the path without its leading slash, so different
// capturable paths never share a key, and no key holds a character SPEC §4 forbids.
func FuzzNewAsset(f *testing.F) {
	for _, p := range []string{"/kcs2/img/title/01.png", "/kcs2/js/main.js%3Fx.png", "/kcs2/js/main.js?x.png",
		"/kcs2/img/title/01.png#ZZZ.txt", "/kcs2/./a.png", "//kcs2/a.png", "/kcs2/a\\b.png"} {
		f.Add(p)
	}
	h := hashOf([]byte("x"))
	f.Fuzz(func(t *testing.T, p string) {
		a, err := NewAsset(p, 1, h)
		if err != nil {
			return
		}
		if strings.ContainsAny(a.Key, "?#\\\x00\r\n") {
			t.Fatalf("key %q from path %q holds a forbidden character", a.Key, p)
		}
		for _, seg := range strings.Split(a.Key, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("key %q from path %q holds a dot segment", a.Key, p)
			}
		}
		if a.Key != KeyPrefix+p[1:] || a.RelativePath != p[1:] {
			t.Fatalf("path %q gave key %q, relative path %q", p, a.Key, a.RelativePath)
		}
	})
}
