package assettest

import (
	"encoding/json"
	"net/url"
	"strconv"
	"testing"
	"time"
)

type keysAnswer struct {
	Keys            []string  `json:"keys"`
	Items           []keyItem `json:"items"`
	Total           int       `json:"total"`
	Incremental     bool      `json:"incremental"`
	SnapshotUpperMs int64     `json:"snapshotUpperMs"`
	SnapshotUpperAt string    `json:"snapshotUpperAt"`
	RefreshedAt     string    `json:"refreshedAt"`
}

func getKeys(t *testing.T, s *Server, tk Tokens, query string) keysAnswer {
	t.Helper()
	code, b := call(t, s, "GET", s.KeysEndpoint+query, nil, auth(tk))
	if code != 200 {
		t.Fatalf("keys: %d %s", code, b)
	}
	var a keysAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestKeysFieldSet checks the listing's fields and their JSON types
// (asset-index-cache.ts:65-83, 298-330): degraded only when true, and
// contentHash null for an object stored without one.
func TestKeysFieldSet(t *testing.T) {
	s, tk, _ := newFake(t)
	s.Seed("assets/a.png", sha([]byte("a")), 1)
	s.Seed("assets/legacy.png", "", 2)
	fields := func() map[string]any {
		t.Helper()
		code, b := call(t, s, "GET", s.KeysEndpoint, nil, auth(tk))
		if code != 200 {
			t.Fatalf("keys: %d %s", code, b)
		}
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		return doc
	}
	doc := fields()
	want := map[string]string{
		"keys": "array", "items": "array", "total": "number", "refreshedAt": "string",
		"cacheExpiresAt": "string", "cached": "bool", "incremental": "bool",
		"snapshotUpperAt": "string", "snapshotUpperMs": "number",
	}
	for k, typ := range want {
		if got := jsonType(doc[k]); got != typ {
			t.Errorf("%s is %s, want %s", k, got, typ)
		}
	}
	if len(doc) != len(want) {
		t.Errorf("fields %v, want exactly %v (no degraded unless degraded)", doc, want)
	}
	if doc["cached"] != false || doc["incremental"] != false || doc["total"] != 2.0 {
		t.Errorf("cached %v incremental %v total %v", doc["cached"], doc["incremental"], doc["total"])
	}
	refreshed, err1 := time.Parse(time.RFC3339Nano, doc["refreshedAt"].(string))
	expires, err2 := time.Parse(time.RFC3339Nano, doc["cacheExpiresAt"].(string))
	if err1 != nil || err2 != nil || !refreshed.Equal(t0) || expires.Sub(refreshed) != 6*time.Hour {
		t.Errorf("refreshedAt %v cacheExpiresAt %v, want t0 and t0 + 6 h", doc["refreshedAt"], doc["cacheExpiresAt"])
	}
	for _, it := range doc["items"].([]any) {
		item := it.(map[string]any)
		if len(item) != 4 || jsonType(item["key"]) != "string" || jsonType(item["size"]) != "number" ||
			jsonType(item["uploadedAt"]) != "number" {
			t.Errorf("item %v", item)
		}
		switch item["key"] {
		case "assets/legacy.png":
			if v, ok := item["contentHash"]; !ok || v != nil {
				t.Errorf("legacy item contentHash %v, want null", v)
			}
		default:
			if jsonType(item["contentHash"]) != "string" {
				t.Errorf("item contentHash %v", item["contentHash"])
			}
		}
	}

	s.SetKeysMode(KeysMode{Cached: true, Degraded: true, OmitSnapshotUpperMs: true})
	doc = fields()
	if _, ok := doc["snapshotUpperMs"]; ok || doc["cached"] != true || doc["degraded"] != true {
		t.Errorf("cached degraded answer without snapshotUpperMs: %v", doc)
	}
	s.SetKeysMode(KeysMode{OmitSnapshotUpperMs: true}) // not cached: ignored
	if doc = fields(); jsonType(doc["snapshotUpperMs"]) != "number" || doc["cached"] != false {
		t.Errorf("fresh answer: %v", doc)
	}
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "array"
	case float64:
		return "number"
	case string:
		return "string"
	case bool:
		return "bool"
	case map[string]any:
		return "object"
	}
	return "?"
}

// TestKeysSince: only items uploaded after since and at or before the
// snapshot, newest first (asset-index-cache.ts:332-352, 713); since is
// read as parseInt does and counts when > 0 (assets.ts:290-299).
func TestKeysSince(t *testing.T) {
	s, tk, _ := newFake(t)
	base := t0
	s.Seed("assets/a.png", sha([]byte("a")), 1)
	s.Seed("assets/b.png", sha([]byte("b")), 2) // same ms: made 1 ms later

	full := getKeys(t, s, tk, "")
	if full.Incremental || full.Total != 2 || len(full.Items) != 2 {
		t.Fatalf("full listing = %+v", full)
	}
	if full.Keys[0] != "assets/b.png" || full.Items[0].UploadedAt != base.UnixMilli()+1 {
		t.Errorf("not newest first: %+v", full.Items)
	}
	if full.SnapshotUpperMs != base.UnixMilli()+1 || full.SnapshotUpperAt != "2025-12-02T00:00:00.001Z" {
		t.Errorf("snapshot = %d %s", full.SnapshotUpperMs, full.SnapshotUpperAt)
	}
	if it := full.Items[1]; it.Key != "assets/a.png" || *it.ContentHash != sha([]byte("a")) || it.Size != 1 {
		t.Errorf("item = %+v", it)
	}

	since := strconv.FormatInt(full.SnapshotUpperMs, 10)
	// Nothing new since the snapshot, even at the same clock reading.
	if inc := getKeys(t, s, tk, "?since="+since); !inc.Incremental || inc.Total != 0 {
		t.Errorf("incremental right after = %+v", inc)
	}
	// An object stored in the snapshot's millisecond still lands above it.
	s.Seed("assets/c.png", sha([]byte("c")), 3)
	inc := getKeys(t, s, tk, "?since="+since)
	if got, want := s.LastRequestURI(Keys), KeysPath+"?since="+since; got != want {
		t.Errorf("LastRequestURI = %q, want %q", got, want)
	}
	if inc.Total != 1 || inc.Keys[0] != "assets/c.png" {
		t.Errorf("incremental = %+v", inc)
	}
	for _, q := range []string{"?since=0", "?since=-5", "?since=abc", "?since=", "?since=%20x"} {
		if a := getKeys(t, s, tk, q); a.Incremental || a.Total != 3 {
			t.Errorf("%s: %+v, want a full listing", q, a)
		}
	}
	// parseInt reads a leading number: "<ms>abc", " <ms>" and "+<ms>" are since=<ms>.
	for _, q := range []string{since + "abc", " " + since, "+" + since, since + ".9"} {
		if a := getKeys(t, s, tk, "?since="+url.QueryEscape(q)); !a.Incremental || a.Total != 1 {
			t.Errorf("since=%q: %+v, want the one item after %s", q, a, since)
		}
	}
	if s.Requests(Keys) != 12 {
		t.Errorf("Requests(Keys) = %d, want 12", s.Requests(Keys))
	}
}

func TestJSParseInt(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"123", 123, true}, {"  42x", 42, true}, {"-7", -7, true}, {"+3", 3, true},
		{"1e3", 1, true}, {"0x10", 0, true}, {"", 0, false}, {"x1", 0, false}, {"-", 0, false},
		{"99999999999999999999999", 1<<63 - 1, true},
	} {
		if got, ok := jsParseInt(tt.in); got != tt.want || ok != tt.ok {
			t.Errorf("jsParseInt(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
