package assets

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// An acknowledged upload is on disk within a second, read back by the next process, and folded
// into the index file by the next save; a torn last line (a crash mid-append) is skipped.
func TestAcknowledgedUploadsAreDurable(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	tok := srv.NewSession()
	h := &SessionHolder{}
	h.Set(Session{AccessToken: tok.Access, RefreshToken: tok.Refresh, DatasetToken: tok.Dataset})
	path := filepath.Join(t.TempDir(), "asset_index.json")
	open := func() *Index {
		ix, err := OpenIndex(IndexOptions{Endpoint: srv.KeysEndpoint, Path: path, Session: h})
		if err != nil {
			t.Fatal(err)
		}
		return ix
	}
	hash := hashOf([]byte("a"))
	ix := open()
	start := time.Now()
	ix.Add("assets/kcs2/a.png", hash, 1)
	for !open().Known("assets/kcs2/a.png", hash) {
		if time.Since(start) > time.Second {
			t.Fatal("an acknowledged upload was not durable within 1 s")
		}
		time.Sleep(10 * time.Millisecond) // poll: the append is made by a timer
	}

	f, err := os.OpenFile(path+".acks", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"key":"assets/kcs2/torn.png","conte`)
	f.Close()
	if ix2 := open(); !ix2.Known("assets/kcs2/a.png", hash) || ix2.Len() != 1 {
		t.Errorf("a torn last line spoiled the log: known %v, len %d", ix2.Known("assets/kcs2/a.png", hash), ix2.Len())
	}

	srv.Seed("assets/kcs2/a.png", hash, 1)
	if err := ix.Refresh(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".acks"); !os.IsNotExist(err) {
		t.Errorf("the ack log outlived a full save (stat: %v)", err)
	}
	if !open().Known("assets/kcs2/a.png", hash) {
		t.Error("the saved index lost the acknowledged upload")
	}
}
