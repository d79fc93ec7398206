package pending

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkSave compares Save of 100 KB entries, with every fsync, to a raw baseline that writes,
// fsyncs and renames the same two files and fsyncs the folder, with no store logic. Run the two
// side by side (-count=5) and compare medians: the target is store >= 80 % of raw.
func BenchmarkSave(b *testing.B) {
	data := make([]byte, 100<<10)
	rand.Read(data)
	metaSize := benchMetaSize(b, data)

	b.Run("store", func(b *testing.B) {
		s, err := Open(Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.SetBytes(int64(len(data)))
		c := assetContext("assets/kcs2/img/0.png", data)
		i := 0
		for b.Loop() {
			// A new key each time, so nothing is deduplicated; the hash is known, as on the
			// live path, and Save still verifies it.
			c.Key = fmt.Sprintf("assets/kcs2/img/%d.png", i)
			if _, _, err := s.Save(c, "https://fusou.dev/api/asset-sync/upload",
				map[string]string{"Origin": "https://fusou.dev"}, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("raw", func(b *testing.B) {
		dir := b.TempDir()
		meta := bytes.Repeat([]byte("m"), metaSize)
		b.SetBytes(int64(len(data)))
		i := 0
		for b.Loop() {
			rawWrite(b, dir, fmt.Sprintf("%d.bin", i), data)
			rawWrite(b, dir, fmt.Sprintf("%d.json", i), meta)
			if err := syncDir(dir); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkSaveInterleaved alternates one Save and one raw write per iteration and reports the
// time of each and the ratio of their rates, so that both see the same machine load: on a shared
// machine, runs of one and then the other differ by more than the store costs.
func BenchmarkSaveInterleaved(b *testing.B) {
	data := make([]byte, 100<<10)
	rand.Read(data)
	meta := bytes.Repeat([]byte("m"), benchMetaSize(b, data))
	s, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rawDir := b.TempDir()
	c := assetContext("assets/kcs2/img/0.png", data)
	var storeTime, rawTime time.Duration
	i := 0
	for b.Loop() {
		c.Key = fmt.Sprintf("assets/kcs2/img/%d.png", i)
		start := time.Now()
		if _, _, err := s.Save(c, "https://fusou.dev/api/asset-sync/upload",
			map[string]string{"Origin": "https://fusou.dev"}, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		rawWrite(b, rawDir, fmt.Sprintf("%d.bin", i), data)
		rawWrite(b, rawDir, fmt.Sprintf("%d.json", i), meta)
		if err := syncDir(rawDir); err != nil {
			b.Fatal(err)
		}
		storeTime += mid.Sub(start)
		rawTime += time.Since(mid)
		i++
	}
	b.ReportMetric(float64(storeTime.Nanoseconds())/float64(b.N), "store-ns/save")
	b.ReportMetric(float64(rawTime.Nanoseconds())/float64(b.N), "raw-ns/save")
	b.ReportMetric(100*rawTime.Seconds()/storeTime.Seconds(), "store-%-of-raw")
}

// benchMetaSize is the size of the .json Save writes for data, so the baseline writes as much.
func benchMetaSize(b *testing.B, data []byte) int {
	s, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	e := mustSave(b, s, "assets/kcs2/img/0.png", data)
	fi, err := os.Stat(filepath.Join(s.Dir(), e.ID+".json"))
	if err != nil {
		b.Fatal(err)
	}
	return int(fi.Size())
}

// rawWrite is the bare durable write: temp file, write, fsync, close, rename.
func rawWrite(b *testing.B, dir, name string, data []byte) {
	f, err := os.CreateTemp(dir, ".raw-*")
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
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLargeStore opens a store of 100,000 entries (validation included; the target is
// <= 2 s) and lists it and takes its stats, which read memory only.
func BenchmarkLargeStore(b *testing.B) {
	const n = 100000
	dir := b.TempDir()
	start := time.Now()
	writeEntries(b, dir, n)
	b.Logf("wrote %d entries in %v", n, time.Since(start))

	b.Run("Open", func(b *testing.B) {
		// CPU seconds per open, beside the wall time: on a shared machine the wall time
		// mostly measures the other load.
		cpu := processCPU()
		defer func() { b.ReportMetric((processCPU()-cpu).Seconds()/float64(b.N), "cpu-s/op") }()
		for b.Loop() {
			s, err := Open(Options{Dir: dir})
			if err != nil {
				b.Fatal(err)
			}
			if got := s.Stats().Count; got != n {
				b.Fatalf("opened %d entries, want %d", got, n)
			}
			s.Close()
		}
	})
	s, err := Open(Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.Run("List", func(b *testing.B) {
		for b.Loop() {
			if len(s.List()) != n {
				b.Fatal("short list")
			}
		}
	})
	b.Run("Stats", func(b *testing.B) {
		for b.Loop() {
			if s.Stats().Count != n {
				b.Fatal("wrong count")
			}
		}
	})
}

// writeEntries writes n valid entries straight to dir (absolute), without fsync, as a store would
// have.
func writeEntries(tb testing.TB, dir string, n int) {
	tb.Helper()
	data := make([]byte, 64)
	created := time.Unix(1764633600, 0).Unix()
	for i := range n {
		id := uuid.NewString()
		data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16)
		c := assetContext(fmt.Sprintf("assets/kcs2/img/%d.png", i), data)
		ctx, _ := encodeContext(c)
		meta, err := encodeMeta(Meta{ID: id, TargetURL: "https://fusou.dev/api/asset-sync/upload",
			Headers:   diskHeaders(map[string]string{"Origin": "https://fusou.dev", "Content-Type": "image/png"}, c.ContentHash),
			CreatedAt: created + int64(i%5000), FilePath: filepath.Join(dir, binName(id)), Context: ctx})
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, id+".bin"), data, fileMode); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, id+".json"), meta, fileMode); err != nil {
			tb.Fatal(err)
		}
	}
}
