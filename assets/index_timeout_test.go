package assets

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// The keys request is bounded by RequestTimeout (request_timeout_seconds), not a fixed minute.
func TestIndexRequestTimeout(t *testing.T) {
	srv := assettest.NewServer()
	defer srv.Close()
	srv.SetFaultFunc(assettest.Keys, func(*http.Request, int) *assettest.Fault { return &assettest.Fault{Delay: time.Minute} })
	tok := srv.NewSession()
	h := &SessionHolder{}
	h.Set(Session{AccessToken: tok.Access, RefreshToken: tok.Refresh, DatasetToken: tok.Dataset})
	ix, err := OpenIndex(IndexOptions{Endpoint: srv.KeysEndpoint, Session: h, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := ix.Refresh(context.Background(), true); err == nil {
		t.Fatal("a keys request that never answers succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the keys request gave up after %v, want about 300 ms", d)
	}
}
