package pending

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// noSyncDisk skips the fsyncs of temp files and folders, so that the model test runs thousands of operations
// in seconds. It tests the store's logic; TestCrash tests its durability with real fsyncs.
type noSyncDisk struct{}

func (noSyncDisk) Wrap(f *os.File) tempFile { return noSyncFile{f} }

func (noSyncDisk) SyncDir(string) error { return nil }

type noSyncFile struct{ *os.File }

func (noSyncFile) Sync() error { return nil }

// modelEntry is what the model knows of one entry.
type modelEntry struct {
	id, key      string
	data         []byte
	created      int64
	attempts     int
	lastAt       int64
	lastErr      string
	hash         string
	rejectReason string
}

// storeModel is a plain in-memory pending store: the specification the real one is checked against.
type storeModel struct {
	live     map[string]*modelEntry
	rejected map[string]*modelEntry
}

func (m *storeModel) sorted() []*modelEntry {
	out := make([]*modelEntry, 0, len(m.live))
	for _, e := range m.live {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *modelEntry) int {
		return cmp.Or(cmp.Compare(a.created, b.created), cmp.Compare(a.id, b.id))
	})
	return out
}

func (m *storeModel) find(key, hash string) *modelEntry {
	for _, e := range m.live {
		if e.key == key && e.hash == hash {
			return e
		}
	}
	return nil
}

const (
	modelMaxFiles    = 5
	modelMaxBytes    = 120
	modelTTL         = time.Minute
	modelMaxAttempts = 3
)

// evictFor returns the entries that a save of size bytes evicts, oldest first.
func (m *storeModel) evictFor(size int) []*modelEntry {
	files, total := len(m.live)+1, size
	for _, e := range m.live {
		total += len(e.data)
	}
	var out []*modelEntry
	for _, e := range m.sorted() {
		if files <= modelMaxFiles && total <= modelMaxBytes {
			break
		}
		out = append(out, e)
		files--
		total -= len(e.data)
	}
	return out
}

// TestModel runs random sequences of saves, adoptions, attempts, deletions, rejections, cleanups
// and reopens against the store and the model, comparing them after every step.
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		root := t.TempDir()
		dir := filepath.Join(root, "pending_uploads")
		spool := filepath.Join(root, "spool")
		if err := os.Mkdir(spool, 0o700); err != nil {
			rt.Fatal(err)
		}
		clock := newClock()
		opts := Options{Dir: dir, MaxFiles: modelMaxFiles, MaxBytes: modelMaxBytes, TTL: modelTTL,
			MaxAttempts: modelMaxAttempts, Now: clock.Now, fs: noSyncDisk{}}
		s, err := Open(opts)
		if err != nil {
			rt.Fatal(err)
		}
		defer func() { s.Close() }()
		m := &storeModel{live: map[string]*modelEntry{}, rejected: map[string]*modelEntry{}}

		keys := []string{"assets/a.png", "assets/b.png", "assets/c.json"}
		bodies := [][]byte{{}, []byte("x"), []byte("hello"), bytes.Repeat([]byte("y"), 40), bytes.Repeat([]byte("z"), 70)}
		pickLive := func(rt *rapid.T) *modelEntry {
			es := m.sorted()
			if len(es) == 0 {
				rt.Skip("no entries")
			}
			return rapid.SampledFrom(es).Draw(rt, "entry")
		}
		save := func(rt *rapid.T, adopt bool) {
			clock.Add(time.Duration(rapid.IntRange(0, 2).Draw(rt, "tick")) * time.Second)
			key := rapid.SampledFrom(keys).Draw(rt, "key")
			data := rapid.SampledFrom(bodies).Draw(rt, "body")
			c := assetContext(key, data)
			dup := m.find(key, c.ContentHash)
			evicted := m.evictFor(len(data))
			var got Entry
			var created bool
			var err error
			if adopt {
				p := filepath.Join(spool, "capture")
				if err := os.WriteFile(p, data, 0o600); err != nil {
					rt.Fatal(err)
				}
				got, created, err = s.Adopt(c, "u", nil, p)
			} else {
				if rapid.Bool().Draw(rt, "hash unknown") {
					c = Context{Key: key}
				}
				got, created, err = s.Save(c, "u", nil, bytes.NewReader(data))
			}
			if err != nil {
				rt.Fatalf("save: %v", err)
			}
			if dup != nil {
				if created || got.ID != dup.id {
					rt.Fatalf("duplicate save = %s created %v, want %s", got.ID, created, dup.id)
				}
				return
			}
			if !created {
				rt.Fatalf("save of a new asset was a duplicate of %s", got.ID)
			}
			for _, e := range evicted {
				delete(m.live, e.id)
			}
			sum := sha256.Sum256(data)
			m.live[got.ID] = &modelEntry{id: got.ID, key: key, data: data, created: clock.Now().Unix(),
				hash: hex.EncodeToString(sum[:])}
		}

		rt.Repeat(map[string]func(*rapid.T){
			"save": func(rt *rapid.T) {
				// Adopt fsyncs the caller's file for real, which is slow: one save in six.
				save(rt, rapid.IntRange(0, 5).Draw(rt, "adopt") == 0)
			},
			"attempt": func(rt *rapid.T) {
				e := pickLive(rt)
				clock.Add(time.Second)
				msg := fmt.Sprintf("503 try %d", e.attempts)
				if _, err := s.RecordAttempt(e.id, clock.Now(), msg, time.Time{}); err != nil {
					rt.Fatal(err)
				}
				e.attempts++
				e.lastAt = clock.Now().Unix()
				e.lastErr = msg
			},
			"delete": func(rt *rapid.T) {
				e := pickLive(rt)
				if err := s.Delete(e.id); err != nil {
					rt.Fatal(err)
				}
				delete(m.live, e.id)
			},
			"reject": func(rt *rapid.T) {
				e := pickLive(rt)
				if err := s.Reject(e.id, "400 "+e.key); err != nil {
					rt.Fatal(err)
				}
				delete(m.live, e.id)
				e.rejectReason = "400 " + e.key
				m.rejected[e.id] = e
			},
			"cleanup": func(rt *rapid.T) {
				clock.Add(time.Duration(rapid.IntRange(0, 40).Draw(rt, "wait")) * time.Second)
				now := clock.Now()
				want := map[string]string{}
				for _, e := range m.live {
					switch {
					case now.Unix()-e.created >= int64(modelTTL/time.Second):
						want[e.id] = ReasonExpired
					case e.attempts >= modelMaxAttempts:
						want[e.id] = ReasonMaxAttempts
					}
				}
				got := map[string]string{}
				for _, d := range s.Cleanup(now) {
					got[d.ID] = d.Reason
				}
				if !mapsEqual(got, want) {
					rt.Fatalf("Cleanup = %v, want %v", got, want)
				}
				for id := range want {
					delete(m.live, id)
				}
			},
			"reopen": func(rt *rapid.T) {
				if err := s.Close(); err != nil {
					rt.Fatal(err)
				}
				if s, err = Open(opts); err != nil {
					rt.Fatal(err)
				}
			},
			"": func(rt *rapid.T) { checkModel(rt, s, m, dir) },
		})
	})
}

// checkModel compares the store with the model: the list in order, every field the model knows,
// the stats, the bytes, the rejected folder and the absence of temp files.
func checkModel(rt *rapid.T, s *Store, m *storeModel, dir string) {
	want := m.sorted()
	got := s.List()
	if len(got) != len(want) {
		rt.Fatalf("List has %d entries, model %d", len(got), len(want))
	}
	var total int64
	for i, w := range want {
		g := got[i]
		if g.ID != w.id || g.Context.Key != w.key || g.Context.ContentHash != w.hash || g.CreatedAt != w.created ||
			g.AttemptCount != w.attempts || g.LastAttemptAt != w.lastAt || g.LastError != w.lastErr ||
			g.Context.FileSize != int64(len(w.data)) {
			rt.Fatalf("entry %d = %+v, model %+v", i, g, *w)
		}
		if !s.Has(w.key, w.hash) {
			rt.Fatalf("Has(%s) = false", w.key)
		}
		r, err := s.Open(w.id)
		if err != nil {
			rt.Fatalf("Open(%s): %v", w.id, err)
		}
		var buf bytes.Buffer
		_, err = buf.ReadFrom(r)
		r.Close()
		if err != nil || !bytes.Equal(buf.Bytes(), w.data) {
			rt.Fatalf("bytes of %s = %q, %v; want %q", w.id, buf.Bytes(), err, w.data)
		}
		total += int64(len(w.data))
	}
	st := s.Stats()
	if st.Count != len(want) || st.Bytes != total {
		rt.Fatalf("Stats = %+v, model %d entries, %d bytes", st, len(want), total)
	}
	if len(want) > 0 && st.Oldest.Unix() != want[0].created {
		rt.Fatalf("Oldest = %v, model %d", st.Oldest, want[0].created)
	}
	if st.Count > modelMaxFiles || st.Bytes > modelMaxBytes {
		rt.Fatalf("Stats %+v over the limits", st)
	}
	for id, e := range m.rejected {
		raw, err := os.ReadFile(filepath.Join(dir, rejectedDir, id+".json"))
		if err != nil {
			rt.Fatalf("rejected %s: %v", id, err)
		}
		d, err := decodeMeta(id, raw)
		if err != nil || d.meta.LastError != e.rejectReason {
			rt.Fatalf("rejected %s: %v, last_error %q", id, err, d.meta.LastError)
		}
	}
	jsons := 0
	for _, n := range listDirNames(dir) {
		if len(n) > len(tempPrefix) && n[:len(tempPrefix)] == tempPrefix {
			rt.Fatalf("temp file left: %s", n)
		}
		if filepath.Ext(n) == ".json" {
			jsons++
		}
	}
	if jsons != len(want) {
		rt.Fatalf("%d .json files, model has %d entries", jsons, len(want))
	}
}

func listDirNames(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), sparePrefix) { // the store's reuse pool, not entries
			out = append(out, e.Name())
		}
	}
	return out
}
