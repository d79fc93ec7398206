package assets

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
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

// mark makes body distinct for i.
func mark(body []byte, i int) {
	body[0], body[1], body[2], body[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
}

// BenchmarkCapture is the client-path cost of capturing one 50 KB asset: Start, the body in
// 32 KB chunks (into the memory buffer), Finish (cpu-us/op, the calling thread's CPU). "new" is
// a distinct asset each time, under a path of its own: Finish prints it and queues it for the
// committer, whose work is not measured (the benchmark takes the capture from the queue and
// drops it, untimed). "repeat" is an asset the pipeline has committed before: recognised by
// its print at Finish and dropped, with no hashing and no file.
func BenchmarkCapture(b *testing.B) {
	resp := &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: benchAssetSize}
	// cpu sums the client-path CPU of the captures: the calling thread's CPU time around
	// each one, with the goroutine locked to its thread.
	var cpu time.Duration
	timed := func(p *Pipeline, req *http.Request, body []byte) {
		start := threadCPU()
		c := p.Start(req, resp)
		for off := 0; off < len(body); off += 32 << 10 {
			c.Write(body[off:min(off+32<<10, len(body))])
		}
		c.Finish(true)
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
		f := newFixture(b, fixtureOpts{noRun: true, noSession: true})
		body := benchBody(b)
		b.SetBytes(benchAssetSize)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			mark(body, i)
			i++
			timed(f.p, request(fmt.Sprintf("/kcs2/img/new/%d.png", i)), body)
			b.StopTimer()
			select {
			case c := <-f.p.commits: // the committer's job: dropped, untimed
				f.p.queuedBytes.Add(-c.memory())
				c.release()
			default:
				b.Fatal("a new capture was not queued")
			}
			b.StartTimer()
		}
		if s := f.p.Stats(); s.Captured != int64(i) || s.Known != 0 || s.Shed != 0 {
			b.Fatalf("stats = %+v after %d new captures", s, i)
		}
		report(b)
	})
	b.Run("repeat", func(b *testing.B) {
		lock(b)
		f := newFixture(b, fixtureOpts{noRun: true, noSession: true})
		body := benchBody(b)
		req := request("/kcs2/img/bench.png")
		timed(f.p, req, body)
		f.p.commitBatch(context.Background(), []*capture{<-f.p.commits}) // committed: pending, its print known
		cpu = 0
		b.SetBytes(benchAssetSize)
		b.ReportAllocs()
		for b.Loop() {
			timed(f.p, req, body)
		}
		if s := f.p.Stats(); s.Committed != 1 || s.Known != s.Captured-1 || s.Queued != 0 {
			b.Fatalf("repeats not recognised: %+v", s)
		}
		report(b)
	})
}

// commitBatchSize is the batch BenchmarkCommit commits per iteration: a game start queues
// hundreds of new assets within the committer's hold.
const commitBatchSize = 16

// BenchmarkCommit compares, side by side in each iteration, the pipeline committing a batch of
// commitBatchSize finished 50 KB captures (each hashed, written to a draft, its .json written
// and renamed in, then the store's Sync: an fsync per file and one of the folder) with the raw
// file operations a durable commit needs and nothing else: per capture, write the body to a
// temp file, fsync it and rename it in, then write, fsync and rename in its .json; one folder
// fsync per batch. Both use the same disk (the raw folder is beside the store), and the order
// alternates between iterations. It reports commits/s for each, the pipeline's as a percentage
// of raw's, and the process CPU per commit of each (with TMPDIR, compare disks:
// TMPDIR=/var/tmp go test -run '^$' -bench Commit -benchtime 200x ./assets/).
func BenchmarkCommit(b *testing.B) {
	f := newFixture(b, fixtureOpts{noRun: true, noSession: true})
	rawDir := filepath.Join(f.dir, "raw")
	if err := os.Mkdir(rawDir, 0o700); err != nil {
		b.Fatal(err)
	}
	bodies := make([][]byte, commitBatchSize)
	for i := range bodies {
		bodies[i] = benchBody(b)
	}
	var pipeTime, rawTime, pipeCPU, rawCPU time.Duration
	b.SetBytes(2 * commitBatchSize * benchAssetSize)
	n := 0
	for b.Loop() {
		batch := make([]*capture, commitBatchSize)
		for i, body := range bodies { // finished captures, as the committer takes them
			mark(body, n+i)
			f.capture(fmt.Sprintf("/kcs2/img/b/%d.png", n+i), body, "")
			batch[i] = <-f.p.commits
			f.p.queuedBytes.Add(-batch[i].memory())
		}
		pipe := func() {
			start, cpu := time.Now(), processCPU()
			f.p.commitBatch(context.Background(), batch)
			if _, err := f.store.Sync(); err != nil {
				b.Fatal(err)
			}
			pipeTime += time.Since(start)
			pipeCPU += processCPU() - cpu
		}
		raw := func() {
			start, cpu := time.Now(), processCPU()
			rawCommit(b, rawDir, bodies, n)
			rawTime += time.Since(start)
			rawCPU += processCPU() - cpu
		}
		if n/commitBatchSize%2 == 0 {
			pipe()
			raw()
		} else {
			raw()
			pipe()
		}
		n += commitBatchSize
	}
	if s := f.p.Stats(); s.Committed != int64(n) {
		b.Fatalf("committed %d of %d: %+v", s.Committed, n, s)
	}
	b.ReportMetric(float64(n)/pipeTime.Seconds(), "pipeline-commits/s")
	b.ReportMetric(float64(n)/rawTime.Seconds(), "raw-commits/s")
	b.ReportMetric(100*rawTime.Seconds()/pipeTime.Seconds(), "pipeline-%-of-raw")
	b.ReportMetric(float64(pipeCPU.Microseconds())/float64(n), "pipeline-cpu-us/commit")
	b.ReportMetric(float64(rawCPU.Microseconds())/float64(n), "raw-cpu-us/commit")
}

// rawMeta is a .json of an entry's size.
var rawMeta = []byte(`{"id":"0b6f3c1e-7a52-4f0e-9c1d-2f8a4d5e6b7c","target_url":"https://fusou.dev/api/asset-sync/upload","headers":{"Content-Type":"image/png","Origin":"https://fusou.dev"},"created_at":1,"attempt_count":0,"last_attempt_at":0,"last_error":"","file_path":"0b6f3c1e-7a52-4f0e-9c1d-2f8a4d5e6b7c.bin","context":"{\"relative_path\":\"kcs2/img/b/1.png\",\"key\":\"assets/kcs2/img/b/1.png\",\"file_size\":51200,\"content_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"content_type\":\"image/png\",\"file_name\":\"1.png\"}"}`)

// rawCommit is the floor for a durable commit of a batch: for each body, write it to a temp
// file, fsync and rename it in, then the same for a small .json; fsync the folder once.
func rawCommit(b *testing.B, dir string, bodies [][]byte, first int) {
	for i, body := range bodies {
		name := filepath.Join(dir, fmt.Sprint(first+i))
		rawWrite(b, name+".bin", body)
		rawWrite(b, name+".json", rawMeta)
	}
	d, err := os.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	if err := d.Sync(); err != nil && runtime.GOOS != "windows" { // Windows cannot flush a folder
		b.Fatal(err)
	}
	d.Close()
}

// rawWrite writes data to a temp file beside name, fsyncs it and renames it to name.
func rawWrite(b *testing.B, name string, data []byte) {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPipelineUpload is the whole path for distinct 50 KB assets against the API fake
// on loopback: capture, hash, commit, sync, upload, delete, per worker count. Requests go
// through the real uploader (two stages) with a session. uploads/s is over the wall time from
// the first capture to the last entry's deletion: the pipeline syncs and uploads once the
// captures stop streaming in, so most of the uploads come after the loop.
func BenchmarkPipelineUpload(b *testing.B) {
	for _, workers := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			f := newFixture(b, fixtureOpts{workers: workers})
			body := benchBody(b)
			b.SetBytes(benchAssetSize)
			start := time.Now()
			n := 0
			for b.Loop() {
				mark(body, n)
				f.capture(fmt.Sprintf("/kcs2/img/u/%d.png", n), body, "")
				n++
			}
			// Entries beyond the workers' queue wait for a retry pass: deliver them as one would.
			eventually(b, "every upload", func() bool {
				for _, e := range f.store.List() {
					f.p.Deliver(context.Background(), e, true)
				}
				s := f.p.Stats()
				return s.Committed+s.Shed+s.Known >= int64(n) && f.store.Stats().Count == 0
			})
			b.ReportMetric(float64(f.srv.Uploads())/time.Since(start).Seconds(), "uploads/s")
			if s := f.p.Stats(); s.Shed > 0 {
				b.Logf("shed %d of %d", s.Shed, n)
			}
		})
	}
}
