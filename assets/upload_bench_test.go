package assets

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// BenchmarkUpload uploads distinct 50 KB assets (both stages each) to the
// fake on loopback with 1, 2, 4 and 8 workers sharing one Uploader and the
// default transport. Results: docs/bench/assets-upload.md.
func BenchmarkUpload(b *testing.B) {
	const size = 50 << 10
	for _, workers := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			srv := assettest.NewServer()
			defer srv.Close()
			h := new(SessionHolder)
			h.Set(testSession(srv))
			u, err := NewUploader(UploaderOptions{Endpoint: srv.UploadEndpoint, Session: h})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			b.ReportAllocs()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					data := make([]byte, size)
					for i := range data {
						data[i] = byte(i * 7)
					}
					for {
						n := next.Add(1)
						if n > int64(b.N) {
							return
						}
						// Distinct bytes, key and hash per asset.
						binary.LittleEndian.PutUint64(data, uint64(n))
						a, err := NewAsset(fmt.Sprintf("/kcs2/bench/%d/%d.png", w, n), size, hashOf(data))
						if err != nil {
							b.Error(err)
							return
						}
						if res := u.Upload(context.Background(), a, bytes.NewReader(data)); res.Class != Success {
							b.Errorf("Upload = %+v", res)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			if got := srv.Uploads(); got != b.N {
				b.Errorf("server accepted %d uploads, want %d", got, b.N)
			}
		})
	}
}
