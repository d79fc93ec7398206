package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/assets"
	"github.com/fusou-proxy/fusou-proxy/pending"
)

// `pending list` and `show` include rejected/ entries, marked, and `purge --rejected` removes
// them (SPEC §9).
func TestPendingListShowsRejected(t *testing.T) {
	home := t.TempDir()
	data := filepath.Join(home, "data")
	st, err := pending.Open(pending.Options{Dir: filepath.Join(data, "pending_uploads")})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("\x89PNG rejected")
	a, err := assets.NewAsset("/kcs2/img/r.png", int64(len(body)), sha(body))
	if err != nil {
		t.Fatal(err)
	}
	e, _, err := st.Save(pending.Context{RelativePath: a.RelativePath, Key: a.Key, FileSize: a.Size,
		ContentHash: a.ContentHash, ContentType: a.ContentType, FileName: a.FileName},
		"https://fusou.dev/api/asset-sync/upload", nil, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Reject(e.ID, "upload: 415 Unsupported Media Type"); err != nil {
		t.Fatal(err)
	}
	st.Close()

	_, list, errOut := runCLI(t, home, "pending", "list", "--data-dir", data)
	if !strings.Contains(list, e.ID) || !strings.Contains(list, "assets/kcs2/img/r.png (rejected)") ||
		!strings.Contains(list, "415") || !strings.Contains(list, "1 in rejected/ or corrupt/") {
		t.Errorf("pending list:\n%s\n%s", list, errOut)
	}
	_, show, _ := runCLI(t, home, "pending", "show", e.ID, "--data-dir", data)
	if !strings.Contains(show, `"where": "rejected"`) {
		t.Errorf("pending show:\n%s", show)
	}
	_, out, _ := runCLI(t, home, "pending", "purge", "--rejected", "--data-dir", data)
	if !strings.Contains(out, "purged 1 rejected entries") {
		t.Errorf("pending purge --rejected: %s", out)
	}
	if _, list, _ := runCLI(t, home, "pending", "list", "--data-dir", data); strings.Contains(list, e.ID) {
		t.Errorf("the rejected entry is still listed after the purge:\n%s", list)
	}
}
