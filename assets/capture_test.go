package assets

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"testing"
)

// stream feeds body to a new capture of urlPath in chunks of chunk bytes, with no
// Content-Length, and finishes it with complete.
func (f *fixture) stream(t *testing.T, urlPath string, body []byte, chunk int, complete bool) {
	t.Helper()
	c := f.p.Start(request(urlPath), &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1})
	if c == nil {
		t.Fatal("capture declined")
	}
	for off := 0; off < len(body); off += chunk {
		if _, err := c.Write(body[off:min(off+chunk, len(body))]); err != nil {
			t.Fatal(err)
		}
	}
	c.Finish(complete)
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// bigPNG is a body too large for a capture's buffer: it is written to a draft as it streams.
func bigPNG(i int) []byte { return append(png(i), bytes.Repeat([]byte{byte(i)}, maxMemoryBody)...) }

func TestBodyLargerThanTheBufferGoesToADraftAndIsUploaded(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	cases := []struct {
		path  string
		body  []byte
		chunk int
	}{
		{"/kcs2/img/big/chunks.png", randomBytes(1, 3*maxMemoryBody+123), 4096},
		{"/kcs2/img/big/one-write.png", randomBytes(2, 2*maxMemoryBody), 2 * maxMemoryBody},
		{"/kcs2/img/big/just-over.png", randomBytes(3, maxMemoryBody+1), 16 << 10},
	}
	for _, c := range cases {
		f.stream(t, c.path, c.body, c.chunk, true)
	}
	for _, c := range cases {
		key := "assets" + c.path
		eventually(t, "the upload of "+key, func() bool { return f.srv.UploadCount(key, sum(c.body)) == 1 })
	}
	eventually(t, "every entry's deletion", func() bool { return f.store.Stats().Count == 0 })
	f.noStrayFiles(t)

	// The same bytes again are known: no commit, no request, and the draft is gone.
	f.srv.ResetCounters()
	f.stream(t, cases[0].path, cases[0].body, cases[0].chunk, true)
	eventually(t, "the repeat to be recognised", func() bool { return f.p.Stats().Known == 1 })
	if s := f.p.Stats(); s.Committed != int64(len(cases)) || s.Shed != 0 {
		t.Errorf("stats after a repeat = %+v, want %d committed", s, len(cases))
	}
	if n := f.srv.TotalRequests(); n != 0 {
		t.Errorf("%d requests for a repeated asset, want 0", n)
	}
	f.noStrayFiles(t)
}

// A body the pipeline has (uploaded, so in the index, or pending in the store) is recognised by
// its print at Finish and dropped there: counted known before Finish returns, never queued, and
// no file is made for it. A body of the same size with other bytes is new.
func TestRepeatedBodyIsRecognisedWithoutACommit(t *testing.T) {
	for _, enc := range []string{"", "gzip", "deflate", "br"} {
		for _, uploaded := range []bool{true, false} {
			t.Run(fmt.Sprintf("encoding=%s/uploaded=%v", enc, uploaded), func(t *testing.T) {
				f := newFixture(t, fixtureOpts{noSession: !uploaded})
				const path, key = "/kcs2/img/repeat.png", "assets/kcs2/img/repeat.png"
				body := png(7)
				f.capture(path, body, enc)
				if uploaded {
					eventually(t, "the upload", func() bool { return f.srv.UploadCount(key, sum(body)) == 1 })
					eventually(t, "the entry's deletion", func() bool { return f.store.Stats().Count == 0 })
					f.noStrayFiles(t)
				} else { // listed once synced, after the batch's prints are remembered
					eventually(t, "the commit", func() bool { return len(f.store.List()) == 1 })
				}
				files := f.storeFiles(t)
				for i := range 3 {
					f.capture(path, body, enc)
					// An encoded body is only known once decoded: without the print of its
					// wire bytes, each repeat would be decoded again.
					if s := f.p.Stats(); s.Known != int64(i+1) || s.Queued != 0 {
						t.Fatalf("after repeat %d, stats = %+v, want %d known at Finish and none queued", i+1, s, i+1)
					}
					if got := f.storeFiles(t); !slices.Equal(got, files) {
						t.Fatalf("store folder went from %q to %q for a repeat", files, got)
					}
				}
				if s := f.p.Stats(); s.Committed != 1 {
					t.Errorf("stats = %+v, want 1 committed", s)
				}
				changed := png(8) // same size, new bytes: a new game version
				f.capture(path, changed, enc)
				eventually(t, "the new version's commit", func() bool { return f.p.Stats().Committed == 2 })
				if !f.store.Has(key, sum(changed)) && f.srv.UploadCount(key, sum(changed)) != 1 {
					t.Error("the new version is neither pending nor uploaded")
				}
				if s := f.p.Stats(); s.Known != 3 {
					t.Errorf("stats = %+v, want 3 known", s)
				}
			})
		}
	}
}

func TestEncodedBodyLargerThanTheBufferIsUploadedDecoded(t *testing.T) {
	for _, enc := range []string{"gzip", "br"} {
		t.Run(enc, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{})
			body := randomBytes(6, 2*maxMemoryBody) // incompressible: the wire body goes to a draft too
			if !f.capture("/kcs2/img/big.json", body, enc) {
				t.Fatal("capture declined")
			}
			eventually(t, "the decoded upload", func() bool { return f.srv.UploadCount("assets/kcs2/img/big.json", sum(body)) == 1 })
			eventually(t, "the entry's deletion", func() bool { return f.store.Stats().Count == 0 })
			f.noStrayFiles(t) // nor the wire body's draft
		})
	}
}

// A body up to maxMemoryBody is kept in memory, in a buffer sized from the Content-Length or
// grown as it streams; a longer one goes to a draft, at once when the Content-Length says so.
// Either way the queued capture holds the body's bytes, and a draft's SHA-256 is computed as
// it streams.
func TestBufferFollowsContentLength(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true})
	for _, tc := range []struct {
		name   string
		cl     int64
		n      int
		draft  bool
		maxCap int
	}{
		{"500 KB, length sent", 500 << 10, 500 << 10, false, 512 << 10},
		{"500 KB, chunked", -1, 500 << 10, false, 512 << 10},
		{"20 KB, length sent", 20 << 10, 20 << 10, false, 32 << 10},
		{"just fits", maxMemoryBody, maxMemoryBody, false, maxMemoryBody},
		{"8 MB, length sent", 8 << 20, 8 << 20, true, minBuffer},
		{"2 MB, chunked", -1, 2 << 20, true, maxMemoryBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.p.Start(request("/kcs2/img/mid.png"), &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: tc.cl})
			body := randomBytes(uint64(tc.n+int(tc.cl)), tc.n) // a body of its own per case
			maxCap := 0
			for off := 0; off < len(body); off += 16 << 10 {
				if _, err := c.Write(body[off:min(off+16<<10, len(body))]); err != nil {
					t.Fatal(err)
				}
				if c.bufp != nil {
					maxCap = max(maxCap, cap(*c.bufp))
				}
			}
			if (c.draft != nil) != tc.draft {
				t.Errorf("written to a draft: %v, want %v", c.draft != nil, tc.draft)
			}
			if maxCap > tc.maxCap {
				t.Errorf("buffer grew to %d bytes, want at most %d", maxCap, tc.maxCap)
			}
			c.Finish(true)
			if n := len(f.p.commits); n != 1 {
				t.Fatalf("%d captures queued, want 1", n)
			}
			q := <-f.p.commits
			defer q.release()
			got := q.bufp
			if q.draft != nil {
				if q.hash != sum(body) {
					t.Errorf("draft's hash = %s, want the body's %s", q.hash, sum(body))
				}
				r, err := q.draft.Reader()
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(r)
				r.Close()
				if err != nil {
					t.Fatal(err)
				}
				got = &b
			}
			if got == nil || !bytes.Equal(*got, body) || q.size != int64(len(body)) {
				t.Errorf("the queued capture does not hold the body's %d bytes", len(body))
			}
		})
	}
}

// A capture the client aborted (Finish(false)) is not counted and leaves nothing: its buffer
// goes back, its draft is removed at once.
func TestAbortedCaptureLeavesNothing(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for i, body := range [][]byte{png(1), randomBytes(4, 3*maxMemoryBody)} {
		path := fmt.Sprintf("/kcs2/img/aborted/%d.png", i)
		f.stream(t, path, body, 16<<10, false)
		if files := f.storeFiles(t); len(files) != 0 {
			t.Errorf("an aborted capture of %d bytes left %q", len(body), files)
		}
	}
	if s := f.p.Stats(); s.Captured != 0 || s.Queued != 0 {
		t.Errorf("aborted captures were counted or queued: %+v", s)
	}
	// The pipeline carries on.
	body := randomBytes(5, 1000)
	f.stream(t, "/kcs2/img/after.png", body, 300, true)
	eventually(t, "the upload", func() bool { return f.srv.UploadCount("assets/kcs2/img/after.png", sum(body)) == 1 })
}

// A capture whose draft cannot be written whole (a body that decodes past max_asset_bytes, or
// does not decode) is shed by the committer, and its drafts are removed.
func TestFailedDraftLeavesNothing(t *testing.T) {
	f := newFixture(t, fixtureOpts{maxAssetBytes: 64 << 10})
	bomb, _ := encode("gzip", make([]byte, 1<<20)) // 1 MiB of zeros in a few KB
	bigBomb, _ := encode("gzip", append(randomBytes(9, 2*maxMemoryBody), make([]byte, 1<<20)...))
	garbled, _ := encode("gzip", randomBytes(10, 3000))
	garbled[len(garbled)/2] ^= 0xff
	cases := []struct {
		name string
		wire []byte
	}{
		{"decodes past the limit, in memory", bomb},
		{"decodes past the limit, wire body in a draft", bigBomb},
		{"corrupt", garbled},
	}
	for i, c := range cases {
		r := f.p.Start(request(fmt.Sprintf("/kcs2/img/fail/%d.png", i)),
			&http.Response{StatusCode: 200, Header: http.Header{"Content-Encoding": {"gzip"}}, ContentLength: -1})
		for b := c.wire; len(b) > 0; b = b[min(len(b), 4096):] {
			r.Write(b[:min(len(b), 4096)])
		}
		r.Finish(true)
	}
	eventually(t, "every capture shed", func() bool { return f.p.Stats().Shed == int64(len(cases)) })
	if s := f.p.Stats(); s.Committed != 0 || s.Captured != int64(len(cases)) {
		t.Errorf("stats = %+v, want %d captured and shed, none committed", s, len(cases))
	}
	f.noStrayFiles(t)
	if n := f.logs.FilterMessage("capture not committed").Len(); n != len(cases) {
		t.Errorf("%d 'capture not committed' lines, want %d", n, len(cases))
	}
}

// A capture that cannot open its draft (the store closed under it) stops without failing the
// client, is not counted, and leaves nothing.
func TestCaptureStopsWhenItsDraftFails(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true})
	c := f.p.Start(request("/kcs2/img/closed.png"), &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1})
	body := bigPNG(3)
	if _, err := c.Write(body[:1000]); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(body[1000:]); err == nil {
		t.Error("a write that needs a draft of a closed store succeeded")
	}
	c.Finish(true)
	if s := f.p.Stats(); s.Captured != 0 || s.Queued != 0 {
		t.Errorf("a stopped capture was counted or queued: %+v", s)
	}
	if files := f.storeFiles(t); len(files) != 0 {
		t.Errorf("a stopped capture left %q", files)
	}
	if n := f.logs.FilterMessage("capture stopped: write failed").Len(); n != 1 {
		t.Errorf("%d 'capture stopped' lines, want 1", n)
	}
}

// A path that passes the proxy's checks but is no asset (".." inside a name: the server refuses
// it) is never committed, makes no request and leaves nothing, however long its body.
func TestInvalidAssetPathLeavesNothing(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	bodies := [][]byte{png(1), bigPNG(2)}
	for i, body := range bodies {
		f.capture(fmt.Sprintf("/kcs2/img/a..%d.png", i), body, "")
	}
	eventually(t, "both captures dropped", func() bool { s := f.p.Stats(); return s.Skipped+s.Shed == int64(len(bodies)) })
	if s := f.p.Stats(); s.Committed != 0 || s.Known != 0 {
		t.Errorf("stats = %+v, want nothing committed", s)
	}
	if n := f.srv.TotalRequests(); n != 0 {
		t.Errorf("%d requests for an invalid asset", n)
	}
	f.noStrayFiles(t)
}

// A path NewAsset refuses (here a ".." inside a name) is declined at Start, before a byte is
// buffered: counted skipped, never queued.
func TestInvalidAssetPathIsSkippedAtStart(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true})
	if f.capture("/kcs2/img/a..b.png", png(1), "") {
		t.Error("Start took a path NewAsset refuses")
	}
	if s := f.p.Stats(); s.Skipped != 1 || s.Queued != 0 || s.Captured != 0 {
		t.Errorf("stats = %+v, want 1 skipped, none queued", s)
	}
}
