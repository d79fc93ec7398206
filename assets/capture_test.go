package assets

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
)

// stream feeds body to a new capture in chunks of chunk bytes and finishes it with complete.
func (f *fixture) stream(t *testing.T, urlPath string, body []byte, chunk int, complete bool) {
	t.Helper()
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: "https", Host: "w01y.kancolle-server.com", Path: urlPath}}
	sp := f.p.Start(req, &http.Response{StatusCode: 200, Header: http.Header{}})
	if sp == nil {
		t.Fatal("capture declined")
	}
	for off := 0; off < len(body); off += chunk {
		if _, err := sp.Write(body[off:min(off+chunk, len(body))]); err != nil {
			t.Fatal(err)
		}
	}
	sp.Finish(complete)
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

func TestBodyLargerThanTheBufferIsSpooledAndUploaded(t *testing.T) {
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

	// The same bytes again are known: no commit, no request.
	f.srv.ResetCounters()
	f.stream(t, cases[0].path, cases[0].body, cases[0].chunk, true)
	if s := f.p.Stats(); s.Known != 1 || s.Committed != int64(len(cases)) {
		t.Errorf("stats after a repeat = %+v, want 1 known and %d committed", s, len(cases))
	}
	if n := f.srv.TotalRequests(); n != 0 {
		t.Errorf("%d requests for a repeated asset, want 0", n)
	}
}

func TestRepeatedBodyIsRecognisedWithoutACommit(t *testing.T) {
	for _, enc := range []string{"", "gzip"} {
		t.Run("encoding="+enc, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{})
			body := png(7)
			f.capture("/kcs2/img/repeat.png", body, enc)
			eventually(t, "the upload", func() bool { return f.srv.UploadCount("assets/kcs2/img/repeat.png", sum(body)) == 1 })
			eventually(t, "the entry's deletion", func() bool { return f.store.Stats().Count == 0 })
			for range 3 {
				f.capture("/kcs2/img/repeat.png", body, enc)
			}
			// An encoded body is only known once decoded: without the print of its wire
			// bytes, each repeat would be decoded into a new entry and deleted again.
			if s := f.p.Stats(); s.Committed != 1 || s.Known != 3 {
				t.Errorf("stats = %+v, want 1 committed and 3 known", s)
			}
			changed := png(8) // same size, new bytes: a new game version
			f.capture("/kcs2/img/repeat.png", changed, enc)
			eventually(t, "the new version's upload", func() bool { return f.srv.UploadCount("assets/kcs2/img/repeat.png", sum(changed)) == 1 })
		})
	}
}

func TestRecycledSpoolFileStartsEmpty(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true}) // no spares made in the background yet
	f.stream(t, "/kcs2/img/aborted.png", randomBytes(4, 3*maxMemoryBody), 16<<10, false)
	if n := len(f.p.spares); n != 1 {
		t.Fatalf("%d spare spool files after an aborted capture, want its file back", n)
	}
	if s := f.p.Stats(); s.Captured != 0 {
		t.Errorf("an aborted capture was counted: %+v", s)
	}
	f.p.Run(context.Background())
	t.Cleanup(func() { f.p.Close() })
	// The next capture that needs a file gets the recycled one first (the spares are a FIFO).
	body := randomBytes(5, 1000)
	f.stream(t, "/kcs2/img/after.png", body, 300, true)
	eventually(t, "the upload", func() bool { return f.srv.UploadCount("assets/kcs2/img/after.png", sum(body)) == 1 })
	if err := f.p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(mustGlob(t, filepath.Join(f.dir, "spool", "*"))); n != 0 {
		t.Errorf("%d files left in the spool folder after Close", n)
	}
}

func TestEncodedBodyLargerThanTheBufferIsUploadedDecoded(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	body := randomBytes(6, 2*maxMemoryBody) // incompressible: the wire body spills too
	var wire bytes.Buffer
	zw := gzip.NewWriter(&wire)
	zw.Write(body)
	zw.Close()
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/kcs2/img/big.json"}}
	sp := f.p.Start(req, &http.Response{StatusCode: 200, Header: http.Header{"Content-Encoding": {"gzip"}}})
	for b := wire.Bytes(); len(b) > 0; b = b[min(len(b), 4096):] {
		sp.Write(b[:min(len(b), 4096)])
	}
	sp.Finish(true)
	eventually(t, "the decoded upload", func() bool { return f.srv.UploadCount("assets/kcs2/img/big.json", sum(body)) == 1 })
}

// A body up to maxMemoryBody is kept in memory, with or without a Content-Length, and goes to
// the spool journal: no spool file of its own. A Content-Length over it keeps the buffer at its
// smallest and spills at once.
func TestBufferFollowsContentLength(t *testing.T) {
	f := newFixture(t, fixtureOpts{noRun: true})
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/kcs2/img/mid.png"}}
	for _, tc := range []struct {
		name    string
		cl      int64
		n       int
		journal bool
		maxCap  int
	}{
		{"500 KB, length sent", 500 << 10, 500 << 10, true, 512 << 10},
		{"500 KB, chunked", -1, 500 << 10, true, 512 << 10},
		{"just fits", maxMemoryBody, maxMemoryBody, true, maxMemoryBody},
		{"8 MB, length sent", 8 << 20, 8 << 20, false, minBuffer},
		{"2 MB, chunked", -1, 2 << 20, false, maxMemoryBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.p.Backlog()
			sp := f.p.Start(req, &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: tc.cl})
			body := randomBytes(uint64(tc.n+int(tc.cl)), tc.n) // a body of its own per case
			maxCap := 0
			for off := 0; off < len(body); off += 16 << 10 {
				sp.Write(body[off:min(off+16<<10, len(body))])
				maxCap = max(maxCap, cap(sp.buf))
			}
			spilled := sp.f != nil
			sp.Finish(true)
			if got := f.p.Backlog() - before; (got == 1) != tc.journal || spilled == tc.journal {
				t.Errorf("journaled %d, spilled to a file %v; want journaled %v", got, spilled, tc.journal)
			}
			if maxCap > tc.maxCap {
				t.Errorf("buffer grew to %d bytes, want at most %d", maxCap, tc.maxCap)
			}
		})
	}
	// The journaled bytes are the bodies.
	for _, want := range []int64{(500 << 10) * 2, 500<<10 - 1, 2 * maxMemoryBody} {
		c, ok := f.p.popBacklog()
		if !ok {
			t.Fatal("journal has fewer records than captures")
		}
		if b, err := c.rec.ReadBody(nil); err != nil || !bytes.Equal(b, randomBytes(uint64(want), int(c.size))) {
			t.Errorf("journaled body of %d bytes does not match: %v", c.size, err)
		}
	}
}

// A path reads as seen from its second capture on, until another path takes its slot; then
// it reads as unseen once (its capture is printed by a drainer) and is remembered again.
func TestSawPath(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	p := f.p
	first := "/kcs2/img/a.png"
	if p.sawPath(first) {
		t.Fatal("a new path reads as seen")
	}
	if !p.sawPath(first) {
		t.Fatal("a path captured before reads as unseen")
	}
	slot := func(s string) uint64 { return (maphash.String(p.pathSeed, s) | 1) % pathSlots }
	var rival string
	for i := 0; rival == ""; i++ { // about pathSlots tries
		if s := fmt.Sprintf("/kcs2/img/b%d.png", i); slot(s) == slot(first) {
			rival = s
		}
	}
	if p.sawPath(rival) {
		t.Fatal("a new path sharing a slot reads as seen")
	}
	if p.sawPath(first) {
		t.Error("a path whose slot another took reads as seen")
	}
	if !p.sawPath(first) {
		t.Error("a path does not read as seen again after it got its slot back")
	}
}
