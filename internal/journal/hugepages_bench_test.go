//go:build linux

package journal

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/internal/hugebuf"
)

// BenchmarkWriteFrom compares what writing a 50 KB record costs the process, its kernel time
// included, when the frames are Go heap buffers and when they come from huge pages (package
// hugebuf), the way the capture pipeline hands them over: 50 records gathered into each write
// by the journal's writer.
// Run the two interleaved: go test -run '^$' -bench WriteFrom -benchtime 20000x -count 3.
func BenchmarkWriteFrom(b *testing.B) {
	const bodyLen, inFlight, perWrite = 50_000, 128, 50
	slot := roundUp(HeadRoom+bodyLen, block) + block
	for _, src := range []string{"heap", "hugepages"} {
		b.Run(src, func(b *testing.B) {
			frames := make([][]byte, inFlight)
			arena := hugebuf.New(16<<20, slot)
			for i := range frames {
				if src == "heap" {
					frames[i] = alignSlice(make([]byte, HeadRoom+bodyLen, slot+block))
					continue
				}
				bp := arena.Get(slot)
				if bp == nil {
					b.Skip("no huge-page arena on this system")
				}
				frames[i] = (*bp)[:HeadRoom+bodyLen]
			}
			for _, f := range frames {
				for k := range f {
					f[k] = byte(rand.Uint32())
				}
			}
			j, _, _, err := Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			free := make(chan int, inFlight)
			for i := range inFlight {
				free <- i
			}
			meta := []byte(`{"path":"/kcs2/img/bench.png"}`)
			var recs []*Record
			b.ResetTimer()
			sys0, all0 := processCPU()
			for n := range b.N {
				i := <-free
				r, err := j.Append(meta, frames[i], func() { free <- i })
				if err != nil {
					b.Fatal(err)
				}
				recs = append(recs, r)
				// The batch waits for the writer, which gathers it into one write within its
				// 10 ms; the writer is the only one that writes.
				if len(recs) == perWrite || n == b.N-1 {
					if err := r.Flushed(); err != nil {
						b.Fatal(err)
					}
					for _, r := range recs {
						r.Release()
					}
					recs = recs[:0]
				}
			}
			sys1, all1 := processCPU()
			b.ReportMetric(float64((sys1-sys0).Nanoseconds())/1e3/float64(b.N), "sys-µs/record")
			b.ReportMetric(float64((all1-all0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/record")
		})
	}
}

// processCPU returns the process's kernel time and its total CPU time.
func processCPU() (sys, all time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Stime.Nano()), time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
