package assets

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// TestUploadLargeAssetStreams uploads a 200 MB file (sparse, so cheap to
// make) and samples the heap meanwhile: the body must stream from the
// file, never sit whole in memory, on the client or on the fake server.
// One stage-2 try is reset half-way to prove the rewind streams too.
func TestUploadLargeAssetStreams(t *testing.T) {
	const size = 200 << 20
	const heapLimit = 64 << 20
	path := filepath.Join(t.TempDir(), "big.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	// A few non-zero bytes, so the hash is not that of zeros alone.
	if _, err := f.WriteAt([]byte("header"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("trailer"), size-7); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	a, err := NewAsset("/kcs2/resources/big.png", size, hex.EncodeToString(h.Sum(nil)))
	if err != nil {
		t.Fatal(err)
	}

	srv := assettest.NewServer()
	defer srv.Close()
	srv.AddFaults(assettest.Upload, assettest.Fault{Reset: true, ReadBody: 50 << 20})
	u, _ := newTestUploader(t, srv, nil)

	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if v := max(ms.HeapInuse, ms.HeapAlloc); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	res := u.Upload(context.Background(), a, f)
	elapsed := time.Since(start)
	close(stop)
	<-sampled

	if res.Class != Success || res.Status != 200 {
		t.Fatalf("Upload = %+v", res)
	}
	if o, ok := srv.Object(a.Key); !ok || o.Size != size || o.ContentHash != a.ContentHash {
		t.Errorf("stored %+v", o)
	}
	if n := srv.Requests(assettest.Upload); n != 2 {
		t.Errorf("%d stage-2 tries, want 2 (one reset)", n)
	}
	t.Logf("200 MB + 50 MB retried in %s, peak heap %d MiB", elapsed, peak.Load()>>20)
	if peak.Load() > heapLimit {
		t.Errorf("peak heap %d MiB, want under %d MiB", peak.Load()>>20, heapLimit>>20)
	}
}
