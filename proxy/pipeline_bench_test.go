//go:build unix

package proxy

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/assets"
	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/pending"
)

// pipelineSink hands captures to the asset pipeline, as cmd/fusou-proxy's captureSink does.
type pipelineSink struct{ p *assets.Pipeline }

func (s pipelineSink) Start(req *http.Request, resp *http.Response) Spool {
	if sp := s.p.Start(req, resp); sp != nil {
		return sp
	}
	return nil // a nil *assets.Spool must not become a non-nil Spool
}

// newTestPipeline is the production capture path: a running assets.Pipeline on a real
// pending store in a temp folder, with a session set, uploading to the API fake on
// loopback. It is closed at the end of the test unless the caller closes it first.
func newTestPipeline(tb testing.TB) (*assets.Pipeline, *pending.Store, *assettest.Server) {
	tb.Helper()
	srv := assettest.NewServer()
	tb.Cleanup(srv.Close)
	dir := tb.TempDir()
	st, err := pending.Open(pending.Options{Dir: filepath.Join(dir, "pending_uploads")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	sess := &assets.SessionHolder{}
	tok := srv.NewSession()
	sess.Set(assets.Session{AccessToken: tok.Access, RefreshToken: tok.Refresh, DatasetToken: tok.Dataset})
	up, err := assets.NewUploader(assets.UploaderOptions{Endpoint: srv.UploadEndpoint, Session: sess})
	if err != nil {
		tb.Fatal(err)
	}
	p, err := assets.NewPipeline(assets.PipelineOptions{Store: st, Uploader: up, Session: sess,
		Endpoint: srv.UploadEndpoint, Workers: 2, QueueSize: 256, MaxAssetBytes: 200 << 20,
		Settings: assets.Settings{Enable: true, Extensions: []string{"png", "jpg", "jpeg", "gif", "webp", "bmp", "json"}}})
	if err != nil {
		tb.Fatal(err)
	}
	p.Run(context.Background())
	tb.Cleanup(func() { p.Close() })
	return p, st, srv
}

// runPipeline is BenchmarkOverhead's fusou-pipeline variant. Besides run's metrics it
// reports how many captures were shed (commit queue full: the store's fsyncs could not keep
// up), and the commit and upload rates while the clients ran.
func (e *benchEnv) runPipeline(b *testing.B, distinct bool) {
	pl, _, _ := newTestPipeline(b)
	p := e.fusou(b, pipelineSink{pl})
	defer p.CloseIdleConnections()
	var during assets.Stats
	e.runThen(b, p, distinct, false, func() {
		during = pl.Stats()
		// Close commits what is still queued (its CPU is counted) and stops the uploads;
		// what they did not reach stays pending, as at a shutdown.
		if err := pl.Close(); err != nil {
			b.Error(err)
		}
	})
	st := pl.Stats()
	if st.Captured == 0 || st.Captured+st.Skipped < int64(b.N) {
		b.Errorf("captured %d of %d requests: %+v", st.Captured, b.N, st)
	}
	b.ReportMetric(100*float64(st.Shed)/float64(max(st.Captured, 1)), "shed-%")
	b.ReportMetric(float64(during.Committed)/b.Elapsed().Seconds(), "commits/s")
	b.ReportMetric(float64(during.Uploaded)/b.Elapsed().Seconds(), "uploads/s")
}
