//go:build unix || windows

package pending

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fullDisk is a fileSystem whose temp files share a byte budget: a write past it fails with
// ENOSPC after writing what fits, as a real full disk does.
type fullDisk struct {
	mu   sync.Mutex
	free int64
}

func (d *fullDisk) setFree(n int64) {
	d.mu.Lock()
	d.free = n
	d.mu.Unlock()
}

func (d *fullDisk) Wrap(f *os.File) tempFile { return &fullFile{File: f, disk: d} }

func (d *fullDisk) SyncDir(dir string) error { return syncDir(dir) }

func (d *fullDisk) SyncFile(path string) error { return osFS{}.SyncFile(path) }

type fullFile struct {
	*os.File
	disk *fullDisk
}

func (f *fullFile) Write(p []byte) (int, error) {
	f.disk.mu.Lock()
	n := int64(len(p))
	short := n > f.disk.free
	if short {
		n = f.disk.free
	}
	f.disk.free -= n
	f.disk.mu.Unlock()
	w, err := f.File.Write(p[:n])
	if err == nil && short {
		err = &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return w, err
}

// TestDiskFull fills the disk during each part of a save: the save fails with ENOSPC and a log
// line, nothing partial stays, and saves work again once there is room.
func TestDiskFull(t *testing.T) {
	data := bytes.Repeat([]byte("asset "), 20000) // 120 KB
	for _, tt := range []struct {
		name string
		free int64
	}{
		{"during the .bin", 50000},
		{"during the .json", int64(len(data)) + 10},
		{"no space at all", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			disk := &fullDisk{}
			s := mustOpen(t, t.TempDir(), Options{fs: disk, Now: newClock().Now})
			disk.setFree(1 << 30)
			kept := mustSave(t, s.Store, "assets/kept.png", []byte("kept"))
			before := listDir(t, s.Dir())

			disk.setFree(tt.free)
			_, _, err := s.Save(assetContext("assets/big.png", data), "u", nil, bytes.NewReader(data))
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Save on a full disk = %v, want ENOSPC", err)
			}
			if got := listDir(t, s.Dir()); fmt.Sprint(got) != fmt.Sprint(before) {
				t.Errorf("folder after the failed save = %v, want %v", got, before)
			}
			lines := s.logs.FilterMessage("Failed to save pending upload").All()
			if len(lines) != 1 || lines[0].ContextMap()["key"] != "assets/big.png" {
				t.Errorf("failure log lines = %v", lines)
			}
			if st := s.Stats(); st.Count != 1 || st.Bytes != 4 {
				t.Errorf("Stats = %+v", st)
			}

			// The store keeps working once space returns.
			disk.setFree(1 << 30)
			e, created, err := s.Save(assetContext("assets/big.png", data), "u", nil, bytes.NewReader(data))
			if err != nil || !created {
				t.Fatalf("Save after space returned = %v, %v", created, err)
			}
			if got := readEntry(t, s.Store, e.ID); !bytes.Equal(got, data) {
				t.Error("bytes differ")
			}
			// An attempt's rewrite on a full disk fails and leaves the old .json in place.
			disk.setFree(10)
			if _, err := s.RecordAttempt(kept.ID, time.Now(), "503", time.Time{}); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("RecordAttempt on a full disk = %v", err)
			}
			if got, _ := s.Get(kept.ID); got.AttemptCount != 0 {
				t.Errorf("attempt_count = %d after a failed rewrite", got.AttemptCount)
			}
			assertNoTemp(t, s.Dir())
			s.Close()
			s2 := mustOpen(t, s.Dir(), Options{})
			if s2.Stats().Count != 2 || s2.logs.FilterMessage("Discarded pending upload").Len() != 0 {
				t.Errorf("reopen: stats %+v, logs %v", s2.Stats(), s2.logs.All())
			}
		})
	}
}
