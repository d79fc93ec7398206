//go:build unix

package assets

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// BenchmarkCommitCost is the process CPU time (getrusage) that one distinct 50 KB capture
// costs off the client's path, in two parts: "spool-cpu-us", making and writing its spool
// file (what the spare-file goroutine and Finish do), and "commit-cpu-us", committing it to
// the pending store (dedupe checks, fsync of the file, the .json written, fsync'd and renamed,
// the folder fsync'd). On a shared 2-core machine the CPU time is steadier than the wall time,
// and it is what a commit takes from the proxy when both run on the same cores
// (docs/bench/proxy-pipeline.md). The store lives under TMPDIR, so compare folders with
//
//	TMPDIR=/var/tmp go test -run '^$' -bench CommitCost -benchtime 400x ./assets/
func BenchmarkCommitCost(b *testing.B) {
	body := benchBody(b)
	f := newFixture(b, fixtureOpts{noRun: true})
	spool := filepath.Join(f.dir, "spool")
	b.SetBytes(benchAssetSize)
	var spoolCPU, commitCPU time.Duration
	i := 0
	for b.Loop() {
		body[0], body[1], body[2] = byte(i), byte(i>>8), byte(i>>16) // distinct assets
		c0 := processCPU()
		path := filepath.Join(spool, fmt.Sprintf("capture-%d", i))
		if err := os.WriteFile(path, body, 0o600); err != nil {
			b.Fatal(err)
		}
		c1 := processCPU()
		f.p.commit(finished{spool: path, urlPath: fmt.Sprintf("/kcs2/img/c/%d.png", i), size: benchAssetSize, hash: sum(body)})
		c2 := processCPU()
		spoolCPU += c1 - c0
		commitCPU += c2 - c1
		i++
	}
	if got := f.p.Stats().Committed; got != int64(i) {
		b.Fatalf("committed %d of %d", got, i)
	}
	b.ReportMetric(float64(spoolCPU.Microseconds())/float64(i), "spool-cpu-us")
	b.ReportMetric(float64(commitCPU.Microseconds())/float64(i), "commit-cpu-us")
}

// BenchmarkCommitters commits distinct 50 KB captures from 1, 4 and 8 goroutines at once
// and reports commits per second: the file system's journal serves concurrent fsyncs with
// shared flushes, which is why the pipeline runs several committers.
func BenchmarkCommitters(b *testing.B) {
	for _, n := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("committers=%d", n), func(b *testing.B) {
			f := newFixture(b, fixtureOpts{noRun: true})
			spool := filepath.Join(f.dir, "spool")
			work := make(chan finished, b.N)
			for i := range b.N {
				body := benchBody(b)
				path := filepath.Join(spool, fmt.Sprintf("capture-%d", i))
				if err := os.WriteFile(path, body, 0o600); err != nil {
					b.Fatal(err)
				}
				work <- finished{spool: path, urlPath: fmt.Sprintf("/kcs2/img/p/%d.png", i), size: benchAssetSize, hash: sum(body)}
			}
			close(work)
			b.SetBytes(benchAssetSize)
			b.ResetTimer()
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					for c := range work {
						f.p.commit(c)
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if got := f.p.Stats().Committed; got != int64(b.N) {
				b.Fatalf("committed %d of %d", got, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}
