package faulttest

import (
	"flag"
	"testing"
	"time"
)

var long = flag.Bool("faults.long", false,
	"run the heavier fault-injection variant: more and larger assets, longer faults, a flapping API")

// size is how much a run does: the default fits CI, -faults.long is the soak.
type size struct {
	load   load
	window time.Duration // the least time a fault lasts
	// bite bounds the wait for a fault to bite, drain the retry passes after it ends.
	bite, drain time.Duration
}

func runSize() size {
	if *long {
		return size{
			load:   load{small: 200, large: 8, smallMin: 20 << 10, smallMax: 200 << 10, largeMin: 2 << 20, largeMax: 8 << 20},
			window: 8 * time.Second, bite: 60 * time.Second, drain: 3 * time.Minute,
		}
	}
	return size{
		load:   load{small: 50, large: 3, smallMin: 20 << 10, smallMax: 200 << 10, largeMin: 2 << 20, largeMax: 5 << 20},
		window: 1500 * time.Millisecond, bite: 30 * time.Second, drain: 60 * time.Second,
	}
}

// snapshot is what a bite condition compares against: the counters when the fault began.
type snapshot struct {
	uploads, failedTries int
	failed               int64
}

func (r *rig) snapshot() snapshot {
	return snapshot{uploads: r.api.Uploads(), failedTries: r.failedTries(), failed: r.stats().Failed}
}

// failedTries counts the requests that failed and were retried within their upload call (or
// ended it): go-retryablehttp logs each at debug level.
func (r *rig) failedTries() int { return r.logs.FilterMessage("retryablehttp: request failed").Len() }

// Bite conditions: evidence that a fault did what it is for, so that no scenario passes
// because its fault happened to miss every upload.
func failedUnder(r *rig, s snapshot) bool { return r.stats().Failed > s.failed }

func triedAgain(r *rig, s snapshot) bool { return r.failedTries() > s.failedTries }

func uploadedThrough(n int) func(*rig, snapshot) bool {
	return func(r *rig, s snapshot) bool { return r.api.Uploads()-s.uploads >= n }
}

func largeInFlight(r *rig, _ snapshot) bool { return r.largeUploads.Load() > 0 }

// storedButFailed: the server holds an asset whose entry recorded a failed attempt, so the
// client has not heard of its success.
func storedButFailed(r *rig, _ snapshot) bool {
	for _, e := range r.store.List() {
		if e.AttemptCount > 0 && r.api.UploadCount(e.Context.Key, e.Context.ContentHash) > 0 {
			return true
		}
	}
	return false
}

func both(a, b func(*rig, snapshot) bool) func(*rig, snapshot) bool {
	return func(r *rig, s snapshot) bool { return a(r, s) && b(r, s) }
}

// scenario is one fault between the uploader and the API.
type scenario struct {
	name   string
	toxics []toxic // put on before the captures, taken off when the fault ends
	// midway toxics are put on once a large upload is in flight, and the toxics named in
	// lift taken off then.
	midway []toxic
	lift   []string
	// slowLink gives the uploader slowLinkTimeout: the fault slows the link without stopping
	// it, which must not read as a stall.
	slowLink bool
	// cut makes the API go away (Toxiproxy closes its listener and every connection) once a
	// large upload is in flight, and come back when the fault ends.
	cut bool
	// flap takes the API down and up again every flap while the fault lasts.
	flap time.Duration
	// bites says the fault did its harm (what, in words); the fault lasts until it does.
	bites    func(*rig, snapshot) bool
	what     string
	longOnly bool
}

func scenarios() []scenario {
	return []scenario{{
		name: "latency",
		toxics: []toxic{
			{Name: "answers-late", Type: "latency", Stream: "downstream", Attrs: map[string]any{"latency": 200, "jitter": 50}},
			{Name: "requests-late", Type: "latency", Stream: "upstream", Attrs: map[string]any{"latency": 50, "jitter": 20}},
		},
		bites: uploadedThrough(4),
		what:  "4 uploads through the latency",
	}, {
		// The requests vanish and the connection is closed 300 ms later.
		name:   "timeout-close-requests",
		toxics: []toxic{{Name: "requests-vanish", Type: "timeout", Stream: "upstream", Attrs: map[string]any{"timeout": 300}}},
		bites:  failedUnder,
		what:   "an upload failing on a closed connection",
	}, {
		// Every connection is reset 10 ms into its first request: mid-body for the large ones.
		name:   "reset-peer-requests",
		toxics: []toxic{{Name: "reset-requests", Type: "reset_peer", Stream: "upstream", Attrs: map[string]any{"timeout": 10}}},
		bites:  failedUnder,
		what:   "an upload failing on a reset",
	}, {
		// A connection carries 1 MiB of requests, then is closed: every large body is cut short.
		name:   "limit-data-requests",
		toxics: []toxic{{Name: "cut-at-1MiB", Type: "limit_data", Stream: "upstream", Attrs: map[string]any{"bytes": 1 << 20}}},
		bites:  both(largeInFlight, failedUnder),
		what:   "a large upload cut short",
	}, {
		// Once a large body is on its way (slowed until it is), the answers vanish and the
		// connections stay open: the server stores the asset, the client only learns of it by
		// its no-progress timeout, and a later attempt must find the asset stored (409) rather
		// than store it twice.
		name:   "answers-stall-after-store",
		toxics: []toxic{{Name: "slow-uplink", Type: "bandwidth", Stream: "upstream", Attrs: map[string]any{"rate": 2048}}},
		midway: []toxic{{Name: "answers-vanish", Type: "timeout", Stream: "downstream", Attrs: map[string]any{"timeout": 0}}},
		lift:   []string{"slow-uplink"},
		bites:  storedButFailed,
		what:   "an asset stored by the server whose upload failed",
	}, {
		// The same with every answer reset instead.
		name:   "answers-reset-after-store",
		toxics: []toxic{{Name: "slow-uplink", Type: "bandwidth", Stream: "upstream", Attrs: map[string]any{"rate": 2048}}},
		midway: []toxic{{Name: "answers-reset", Type: "reset_peer", Stream: "downstream", Attrs: map[string]any{"timeout": 0}}},
		lift:   []string{"slow-uplink"},
		bites:  storedButFailed,
		what:   "an asset stored by the server whose upload failed",
	}, {
		name: "slicer",
		toxics: []toxic{
			{Name: "sliced-requests", Type: "slicer", Stream: "upstream", Attrs: map[string]any{"average_size": 2048, "size_variation": 1024, "delay": 500}},
			{Name: "sliced-answers", Type: "slicer", Stream: "downstream", Attrs: map[string]any{"average_size": 16, "size_variation": 8, "delay": 200}},
		},
		slowLink: true,
		bites:    both(uploadedThrough(4), largeInFlight),
		what:     "4 uploads and a large one through the slicer",
	}, {
		// 256 KB/s: a large body is still crawling through when the limit lifts.
		name:     "bandwidth",
		toxics:   []toxic{{Name: "narrow-uplink", Type: "bandwidth", Stream: "upstream", Attrs: map[string]any{"rate": 256}}},
		slowLink: true,
		bites:    largeInFlight,
		what:     "a large upload under the limit",
	}, {
		// The API goes away while large bodies are in flight (slowed so that they are), and
		// comes back later.
		name:   "api-gone-mid-body",
		toxics: []toxic{{Name: "slow-uplink", Type: "bandwidth", Stream: "upstream", Attrs: map[string]any{"rate": 512}}},
		cut:    true,
		bites:  failedUnder,
		what:   "an upload failing while the API is gone",
	}, {
		name:     "api-flapping",
		toxics:   []toxic{{Name: "some-latency", Type: "latency", Stream: "downstream", Attrs: map[string]any{"latency": 20, "jitter": 10}}},
		flap:     300 * time.Millisecond,
		bites:    both(failedUnder, uploadedThrough(4)),
		what:     "uploads failing and succeeding between flaps",
		longOnly: true,
	}, {
		name: "everything-at-once",
		toxics: []toxic{
			{Name: "late", Type: "latency", Stream: "downstream", Attrs: map[string]any{"latency": 100, "jitter": 80}},
			{Name: "sliced", Type: "slicer", Stream: "upstream", Attrs: map[string]any{"average_size": 4096, "size_variation": 2048, "delay": 50}},
			{Name: "narrow", Type: "bandwidth", Stream: "upstream", Attrs: map[string]any{"rate": 1024}},
			{Name: "resets", Type: "reset_peer", Stream: "upstream", Toxicity: 0.3, Attrs: map[string]any{"timeout": 50}},
			{Name: "cut-at-3MiB", Type: "limit_data", Stream: "upstream", Attrs: map[string]any{"bytes": 3 << 20}},
		},
		bites:    both(triedAgain, uploadedThrough(4)),
		what:     "a request failing and uploads succeeding",
		slowLink: true,
		longOnly: true,
	}}
}

// TestUploadsSurviveNetworkFaults feeds a batch of captures while a fault sits between the
// uploader and the API, ends the fault, runs retry passes until the store is empty, and checks
// that every asset reached the server exactly once with nothing pending, rejected or corrupt.
func TestUploadsSurviveNetworkFaults(t *testing.T) {
	sz := runSize()
	for i, sc := range scenarios() {
		if sc.longOnly && !*long {
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			seed := uint64(i + 1)
			start := time.Now()
			var timeout time.Duration
			if sc.slowLink {
				timeout = slowLinkTimeout
			}
			r := newRig(t, timeout)
			batch := makeAssets(seed, sz.load)

			before := r.snapshot()
			r.addToxics(sc.toxics)
			r.capture(seed, batch)
			// A forced pass while the fault is on contends with the live uploads for the same
			// entries (one upload per entry at any time) and fails where they fail.
			r.retry.Trigger("during the fault", true)
			if sc.cut || len(sc.midway) > 0 {
				waitFor(t, sz.bite, "a large upload in flight", func() bool { return largeInFlight(r, before) })
				r.addToxics(sc.midway)
				for _, name := range sc.lift {
					r.removeToxic(name)
				}
				if sc.cut {
					r.apiDown()
				}
			}
			faultOn, lastFlip := time.Now(), time.Now()
			waitFor(t, sz.bite, "the fault to bite: "+sc.what, func() bool {
				if sc.flap > 0 && time.Since(lastFlip) >= sc.flap {
					if r.down {
						r.apiUp()
					} else {
						r.apiDown()
					}
					lastFlip = time.Now()
				}
				return time.Since(faultOn) >= sz.window && sc.bites(r, before)
			})
			r.removeToxics()
			r.apiUp()
			faultOff := time.Now()
			failedDuring := r.stats().Failed

			r.drain(len(batch), sz.drain)
			r.verify(batch)

			var bytes int64
			for _, a := range batch {
				bytes += a.size
			}
			t.Logf("%d assets (%.1f MB); fault on %s; %d transient failures under it, %d after; %d retry passes after it; %d requests; recovered in %s; %s in all",
				len(batch), float64(bytes)/1e6, faultOff.Sub(faultOn).Round(time.Millisecond), failedDuring,
				r.stats().Failed-failedDuring, r.passes, r.api.TotalRequests(),
				time.Since(faultOff).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestScenarioNamesAreUnique guards the table: names name the subtests, and a scenario without
// a bite condition could pass without its fault touching an upload.
func TestScenarioNamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, sc := range scenarios() {
		if seen[sc.name] {
			t.Errorf("scenario %q twice", sc.name)
		}
		seen[sc.name] = true
		if sc.bites == nil || sc.what == "" {
			t.Errorf("scenario %q has no bite condition", sc.name)
		}
	}
}
