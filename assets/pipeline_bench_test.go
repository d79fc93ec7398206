package assets

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

const benchAssetSize = 50 << 10

func benchBody(b *testing.B) []byte {
	body := make([]byte, benchAssetSize)
	if _, err := rand.Read(body); err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkCapture is the client-path cost of capturing one 50 KB asset: Start, the body in
// 32 KB chunks (into the memory buffer), Finish (cpu-us/op, the calling thread's CPU). "new" is
// a distinct asset each time, under a path of its own: its append to the spool journal, whose
// backlog the benchmark drains itself, so no commit is measured; proc-cpu-us/op adds the
// journal writer's work (the whole process's CPU over the loop, until the last record is
// written). "repeat" is an asset the pipeline has uploaded before: recognised by its print and
// dropped, with no hashing and no file.
func BenchmarkCapture(b *testing.B) {
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/kcs2/img/bench.png"}}
	resp := &http.Response{StatusCode: 200, Header: http.Header{}}
	// cpu sums the client-path CPU of the captures: the calling thread's CPU time around
	// each one, with the goroutine locked to its thread.
	var cpu time.Duration
	capture := func(p *Pipeline, req *http.Request, body []byte) {
		start := threadCPU()
		sp := p.Start(req, resp)
		for off := 0; off < len(body); off += 32 << 10 {
			sp.Write(body[off:min(off+32<<10, len(body))])
		}
		sp.Finish(true)
		cpu += threadCPU() - start
	}
	report := func(b *testing.B) {
		b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-us/op")
		cpu = 0
	}
	lock := func(b *testing.B) {
		runtime.LockOSThread() // each sub-benchmark runs in a goroutine of its own
		b.Cleanup(runtime.UnlockOSThread)
		cpu = 0
	}
	b.Run("new", func(b *testing.B) {
		lock(b)
		f := newFixture(b, fixtureOpts{noRun: true})
		body := benchBody(b)
		b.SetBytes(benchAssetSize)
		b.ReportAllocs()
		i := 0
		var last finished
		proc := processCPU()
		for b.Loop() {
			body[0], body[1], body[2] = byte(i), byte(i>>8), byte(i>>16)
			i++
			newReq := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: fmt.Sprintf("/kcs2/img/new/%d.png", i)}}
			capture(f.p, newReq, body)
			b.StopTimer()
			c, ok := f.p.popBacklog() // journaled for a drainer: drop it, outside the timing
			if !ok {
				b.Fatal("a new capture was not journaled")
			}
			if last.rec != nil {
				last.rec.Release()
			}
			last = c
			b.StartTimer()
		}
		if err := last.rec.Flushed(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64((processCPU()-proc).Nanoseconds())/1e3/float64(b.N), "proc-cpu-us/op")
		last.rec.Release()
		report(b)
	})
	b.Run("repeat", func(b *testing.B) {
		lock(b)
		f := newFixture(b, fixtureOpts{noRun: true})
		body := benchBody(b)
		a, err := NewAsset(req.URL.Path, benchAssetSize, sum(body))
		if err != nil {
			b.Fatal(err)
		}
		f.p.remember(a) // as after its upload
		capture(f.p, req, body)
		if c, ok := f.p.popBacklog(); ok { // a drainer hashes the first copy: its print is known
			f.p.commitJournaled(c)
		}
		cpu = 0
		b.SetBytes(benchAssetSize)
		b.ReportAllocs()
		for b.Loop() {
			capture(f.p, req, body)
		}
		if s := f.p.Stats(); s.Known != s.Captured || len(f.p.commits) != 0 {
			b.Fatalf("repeats not recognised: %+v", s)
		}
		report(b)
	})
}

// BenchmarkCommit compares committing a finished 50 KB capture into the pending store (dedupe
// checks, fsync'd adopt of the spool file, fsync'd metadata, folder fsync) with a raw baseline
// doing the same file operations with no store logic. Each iteration does one of each, so both
// sides see the same disk and the same load; the ratio is reported as store-%-of-raw.
func BenchmarkCommit(b *testing.B) {
	body := benchBody(b)
	f := newFixture(b, fixtureOpts{noRun: true})
	spool := filepath.Join(f.dir, "spool")
	rawDir := b.TempDir()
	var storeTime, rawTime time.Duration
	b.SetBytes(2 * benchAssetSize)
	i := 0
	for b.Loop() {
		path := filepath.Join(spool, fmt.Sprintf("capture-%d", i))
		body[0], body[1], body[2] = byte(i), byte(i>>8), byte(i>>16) // distinct assets
		if err := os.WriteFile(path, body, 0o600); err != nil {
			b.Fatal(err)
		}
		c := finished{spool: path, urlPath: fmt.Sprintf("/kcs2/img/b/%d.png", i), size: benchAssetSize, hash: sum(body)}
		start := time.Now()
		f.p.commit(c)
		storeTime += time.Since(start)

		raw := filepath.Join(rawDir, fmt.Sprintf("capture-%d", i))
		if err := os.WriteFile(raw, body, 0o600); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		rawCommit(b, rawDir, raw, i)
		rawTime += time.Since(start)
		i++
	}
	if got := f.p.Stats().Committed; got != int64(i) {
		b.Fatalf("committed %d of %d", got, i)
	}
	b.ReportMetric(float64(storeTime.Microseconds())/float64(i), "store-us/commit")
	b.ReportMetric(float64(rawTime.Microseconds())/float64(i), "raw-us/commit")
	b.ReportMetric(100*float64(rawTime)/float64(storeTime), "store-%-of-raw")
}

// rawCommit is the floor for a durable commit: fsync the data file and rename it in, write
// and fsync a small metadata file and rename it in, fsync the folder.
func rawCommit(b *testing.B, dir, spool string, i int) {
	f, err := os.OpenFile(spool, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	name := filepath.Join(dir, fmt.Sprintf("%d", i))
	if err := os.Rename(spool, name+".bin"); err != nil {
		b.Fatal(err)
	}
	tmp := name + ".json.tmp"
	m, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	m.Write([]byte(`{"id":"0b6f3c1e-7a52-4f0e-9c1d-2f8a4d5e6b7c","target_url":"https://fusou.dev/api/asset-sync/upload","headers":{},"created_at":1,"attempt_count":0,"last_attempt_at":0,"last_error":"","file_path":"x.bin","context":"{}"}`))
	m.Sync()
	m.Close()
	if err := os.Rename(tmp, name+".json"); err != nil {
		b.Fatal(err)
	}
	d, _ := os.Open(dir)
	d.Sync()
	d.Close()
}

// BenchmarkPipelineUpload is the whole path for distinct 50 KB assets against the API fake
// on loopback: capture, hash, commit, upload, delete, per worker count. Requests go through
// the real uploader (two stages) with a session.
func BenchmarkPipelineUpload(b *testing.B) {
	for _, workers := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			f := newFixture(b, fixtureOpts{noRun: true, workers: workers})
			f.p.Run(context.Background())
			b.Cleanup(func() { f.p.Close() })
			body := benchBody(b)
			b.SetBytes(benchAssetSize)
			n := 0
			for b.Loop() {
				body[0], body[1], body[2], body[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
				for !f.capture(fmt.Sprintf("/kcs2/img/u/%d.png", n), body, "") {
				}
				n++
				for f.p.Stats().Committed+f.p.Stats().Shed < int64(n)-int64(DefaultQueueSize/2) {
					time.Sleep(50 * time.Microsecond) // keep the commit queue from shedding
				}
			}
			eventually(b, "every commit", func() bool { s := f.p.Stats(); return s.Committed+s.Shed+s.Known >= int64(n) })
			// Entries the workers could not take from a full queue wait for a retry pass.
			for _, e := range f.store.List() {
				f.p.Deliver(context.Background(), e)
			}
			eventually(b, "every upload", func() bool { return f.store.Stats().Count == 0 })
			b.ReportMetric(float64(f.srv.Uploads())/b.Elapsed().Seconds(), "uploads/s")
			if s := f.p.Stats(); s.Shed > 0 {
				b.Logf("shed %d of %d", s.Shed, n)
			}
		})
	}
}
