package faulttest

import (
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// TestSlowMovingLinkIsNotCutOff sends one 8 MiB asset over a link that is slow but never stops
// (1 MB/s the whole way). DECISIONS.md promises that request_timeout_seconds "is a no-progress
// timeout ..., so a 200 MB upload on a slow but moving link is not cut off", and SPEC §5 that a
// (key, hash) is uploaded at most once per process. Once net/http has written the body's last
// byte, the send buffer (up to 4 MiB on Linux) and any buffering hop on the way (here Toxiproxy)
// still hold megabytes that drain at the link's pace, which looks like silence to the uploader.
// Before the uploader allowed for that tail (drainAllowance), the try was declared stalled and
// the in-call retry stored the asset twice.
//
// The test uses the suite's 2 s timeout at 1 MB/s; with the production 60 s the same happens
// whenever what sits past the socket outlasts a minute: a 4 MiB send buffer on an uplink under
// about 70 KB/s, or a buffering hop (a local antivirus or corporate proxy that takes the whole
// body at once) in front of an upload that needs more than a minute.
func TestSlowMovingLinkIsNotCutOff(t *testing.T) {
	const seed = 200
	r := newRig(t, 0)
	batch := makeAssets(seed, load{large: 1, largeMin: 8 << 20, largeMax: 8 << 20})
	r.addToxics([]toxic{{Name: "slow-uplink", Type: "bandwidth", Stream: "upstream", Attrs: map[string]any{"rate": 1024}}})
	start := time.Now()
	r.capture(seed, batch)
	waitFor(t, time.Minute, "the upload to settle", func() bool {
		return r.stats().Uploaded+r.stats().Failed > 0
	})
	t.Logf("settled in %s: %+v", time.Since(start).Round(time.Millisecond), r.stats())
	for _, e := range r.logs.FilterMessageSnippet("request failed").All() {
		t.Logf("%s %s %v", e.Time.Format("15:04:05.000"), e.Message, e.ContextMap()["error"])
	}
	if n := r.api.Requests(assettest.Upload); n != 1 {
		t.Errorf("%d stage-2 requests for one asset on a link that never stopped moving, want 1", n)
	}
	if f := r.stats().Failed; f != 0 {
		t.Errorf("%d transient failures on a slow but moving link, want none", f)
	}
	// Let whatever is still on its way arrive, settle the entry, and count the copies stored.
	r.removeToxics()
	r.drain(len(batch), time.Minute)
	r.verify(batch)
}
