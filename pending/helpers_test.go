package pending

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1764633600, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testStore is a Store with the log lines it wrote.
type testStore struct {
	*Store
	logs *observer.ObservedLogs
}

// mustOpen opens a store in dir with observed logs; opts.Dir is set to dir.
func mustOpen(tb testing.TB, dir string, opts Options) testStore {
	tb.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	opts.Dir = dir
	opts.Logger = zap.New(core)
	s, err := Open(opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", dir, err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return testStore{s, logs}
}

// assetContext returns a complete Context for data under key.
func assetContext(key string, data []byte) Context {
	sum := sha256.Sum256(data)
	name := filepath.Base(key)
	return Context{
		RelativePath: key[len("assets/"):],
		Key:          key,
		FileSize:     int64(len(data)),
		ContentHash:  hex.EncodeToString(sum[:]),
		ContentType:  "image/png",
		FileName:     name,
	}
}

// mustSave saves data under key and fails the test on error or on a duplicate.
func mustSave(tb testing.TB, s *Store, key string, data []byte) Entry {
	tb.Helper()
	e, created, err := s.Save(assetContext(key, data), "https://fusou.dev/api/asset-sync/upload",
		map[string]string{"Origin": "https://fusou.dev"}, bytes.NewReader(data))
	if err != nil || !created {
		tb.Fatalf("Save(%s) = created %v, %v", key, created, err)
	}
	return e
}

// readEntry returns the bytes of entry id through Store.Open.
func readEntry(tb testing.TB, s *Store, id string) []byte {
	tb.Helper()
	r, err := s.Open(id)
	if err != nil {
		tb.Fatalf("Open(%s): %v", id, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		tb.Fatalf("read %s: %v", id, err)
	}
	return data
}

// listDir returns the names in dir, sorted; a missing dir is empty.
func listDir(tb testing.TB, dir string) []string {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// symlinkOrSkip makes link point at target, skipping the test where that cannot be done: no
// symlinks at all, or wine 8.0, whose os.Symlink reports success and creates nothing.
func symlinkOrSkip(tb testing.TB, target, link string) {
	tb.Helper()
	if err := os.Symlink(target, link); err != nil {
		tb.Skip("no symlinks:", err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		tb.Skip("wine 8.0's os.Symlink reports success and creates nothing")
	}
}

// ids returns the ids of entries, in order.
func ids(entries []Entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.ID)
	}
	return out
}

// discardLogs returns the "Discarded pending upload" lines as id → reason.
func discardLogs(logs *observer.ObservedLogs) map[string]string {
	out := map[string]string{}
	for _, l := range logs.FilterMessage("Discarded pending upload").All() {
		m := l.ContextMap()
		id, _ := m["id"].(string)
		reason, _ := m["reason"].(string)
		out[id] = reason
	}
	return out
}
