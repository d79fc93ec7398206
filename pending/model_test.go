package pending

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"pgregory.net/rapid"
)

// noSyncDisk skips the fsyncs of files and folders, so that the model test runs thousands of
// operations in seconds. It tests the store's logic; TestCrash tests its durability with real
// fsyncs.
type noSyncDisk struct{}

func (noSyncDisk) Wrap(f *os.File) tempFile { return noSyncFile{f} }

func (noSyncDisk) SyncDir(string) error { return nil }

func (noSyncDisk) SyncFile(string) error { return nil }

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
	// unsynced: committed, and no Sync since; not listed for upload.
	unsynced bool
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
	modelMaxFiles = 5
	modelMaxBytes = 120
)

// listed returns the entries List shows: the synced ones, oldest first.
func (m *storeModel) listed() []*modelEntry {
	return slices.DeleteFunc(m.sorted(), func(e *modelEntry) bool { return e.unsynced })
}

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

// TestModel runs random sequences of saves, batch commits, syncs, attempts, deletions,
// rejections, discards and reopens against the store and the model, comparing them after every
// step.
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		dir := filepath.Join(t.TempDir(), "pending_uploads")
		clock := newClock()
		core, logs := observer.New(zapcore.InfoLevel)
		opts := Options{Dir: dir, MaxFiles: modelMaxFiles, MaxBytes: modelMaxBytes, Now: clock.Now,
			Logger: zap.New(core), fs: noSyncDisk{}}
		s, err := Open(opts)
		if err != nil {
			rt.Fatal(err)
		}
		defer func() { s.Close() }()
		m := &storeModel{live: map[string]*modelEntry{}, rejected: map[string]*modelEntry{}}
		var committed []string // ids Commit created since the last Sync, in order

		// synced is what a Sync (Save's, Close's or a direct one) does to the model.
		synced := func() {
			for _, e := range m.live {
				e.unsynced = false
			}
			committed = nil
		}
		// add records a new entry, after evicting what its commit evicts.
		add := func(id, key string, data []byte, unsynced bool) {
			for _, e := range m.evictFor(len(data)) {
				delete(m.live, e.id)
			}
			m.live[id] = &modelEntry{id: id, key: key, data: data, created: clock.Now().Unix(),
				hash: sha256Hex(data), unsynced: unsynced}
		}

		keys := []string{"assets/a.png", "assets/b.png", "assets/c.json"}
		bodies := [][]byte{{}, []byte("x"), []byte("hello"), bytes.Repeat([]byte("y"), 40), bytes.Repeat([]byte("z"), 70)}
		pickLive := func(rt *rapid.T) *modelEntry {
			es := m.sorted()
			if len(es) == 0 {
				rt.Skip("no entries")
			}
			return rapid.SampledFrom(es).Draw(rt, "entry")
		}

		rt.Repeat(map[string]func(*rapid.T){
			"save": func(rt *rapid.T) {
				clock.Add(time.Duration(rapid.IntRange(0, 2).Draw(rt, "tick")) * time.Second)
				key := rapid.SampledFrom(keys).Draw(rt, "key")
				data := rapid.SampledFrom(bodies).Draw(rt, "body")
				c := assetContext(key, data)
				dup := m.find(key, c.ContentHash)
				if rapid.Bool().Draw(rt, "hash unknown") {
					c = Context{Key: key}
				}
				got, created, err := s.Save(c, "u", nil, bytes.NewReader(data))
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
				add(got.ID, key, data, false)
				synced() // Save syncs every committed entry
			},
			"commit": func(rt *rapid.T) {
				clock.Add(time.Duration(rapid.IntRange(0, 2).Draw(rt, "tick")) * time.Second)
				type plan struct {
					key   string
					data  []byte
					fault string
				}
				var plans []plan
				var batch []*Draft
				for range rapid.IntRange(1, 4).Draw(rt, "drafts") {
					p := plan{key: rapid.SampledFrom(keys).Draw(rt, "key"), data: rapid.SampledFrom(bodies).Draw(rt, "body"),
						fault: rapid.SampledFrom([]string{"", "", "", "", "size", "context"}).Draw(rt, "fault")}
					d, err := s.NewDraft()
					if err != nil {
						rt.Fatal(err)
					}
					if _, err := d.Write(p.data); err != nil {
						rt.Fatal(err)
					}
					d.Context, d.TargetURL = assetContext(p.key, p.data), "u"
					switch p.fault {
					case "size":
						d.Context.FileSize++
					case "context":
						d.Context.ContentHash = "not a hash"
					}
					plans = append(plans, p)
					batch = append(batch, d)
				}
				res := s.Commit(batch)
				for i, p := range plans {
					r := res[i]
					switch dup := m.find(p.key, sha256Hex(p.data)); {
					case p.fault == "size":
						if !errors.Is(r.Err, ErrMismatch) || r.Created {
							rt.Fatalf("draft %d of the wrong size = %v, %v", i, r.Created, r.Err)
						}
					case p.fault == "context":
						if !errors.Is(r.Err, ErrInvalid) || r.Created {
							rt.Fatalf("draft %d with a bad hash = %v, %v", i, r.Created, r.Err)
						}
					case dup != nil:
						if r.Err != nil || r.Created || r.Entry.ID != dup.id {
							rt.Fatalf("duplicate draft %d = %s created %v, %v; want %s", i, r.Entry.ID, r.Created, r.Err, dup.id)
						}
					default:
						if r.Err != nil || !r.Created {
							rt.Fatalf("draft %d = %v, %v", i, r.Created, r.Err)
						}
						add(r.Entry.ID, p.key, p.data, true)
						committed = append(committed, r.Entry.ID)
					}
					if _, err := os.Lstat(draftPath(batch[i])); !r.Created && !errors.Is(err, os.ErrNotExist) {
						rt.Fatalf("dropped draft %d left its file: %v", i, err)
					}
				}
			},
			"sync": func(rt *rapid.T) {
				var want []string
				for _, id := range committed {
					if m.live[id] != nil {
						want = append(want, id)
					}
				}
				got, err := s.Sync()
				if err != nil || !slices.Equal(ids(got), want) {
					rt.Fatalf("Sync = %v, %v; want %v", ids(got), err, want)
				}
				synced()
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
			"discard": func(rt *rapid.T) {
				// The retry service's policy picks what to discard; here the model does.
				if rapid.IntRange(0, 9).Draw(rt, "unknown") == 0 {
					if err := s.Discard(uuid.NewString(), ReasonExpired); !errors.Is(err, ErrNotFound) {
						rt.Fatalf("Discard(unknown id) = %v, want ErrNotFound", err)
					}
					return
				}
				e := pickLive(rt)
				why := rapid.SampledFrom([]string{ReasonExpired, ReasonMaxAttempts}).Draw(rt, "reason")
				if rapid.IntRange(0, 3).Draw(rt, "held") == 0 {
					release, ok := s.TryHold(e.id)
					if !ok {
						rt.Fatalf("TryHold(%s) failed", e.id)
					}
					err := s.Discard(e.id, why)
					release()
					if !errors.Is(err, ErrHeld) {
						rt.Fatalf("Discard(held) = %v, want ErrHeld", err)
					}
					return
				}
				if err := s.Discard(e.id, why); err != nil {
					rt.Fatalf("Discard(%s) = %v", e.id, err)
				}
				if got := discardLogs(logs)[e.id]; got != why {
					rt.Fatalf("discard of %s logged with reason %q, want %q", e.id, got, why)
				}
				delete(m.live, e.id)
			},
			"reopen": func(rt *rapid.T) {
				if err := s.Close(); err != nil {
					rt.Fatal(err)
				}
				synced() // Close syncs
				if s, err = Open(opts); err != nil {
					rt.Fatal(err)
				}
			},
			"": func(rt *rapid.T) { checkModel(rt, s, m, dir) },
		})
	})
}

// checkModel compares the store with the model: the list in order (synced entries only), every
// field the model knows, the stats, the bytes, the rejected folder and the absence of temp files
// and drafts.
func checkModel(rt *rapid.T, s *Store, m *storeModel, dir string) {
	listed := m.listed()
	got := s.List()
	if len(got) != len(listed) {
		rt.Fatalf("List has %d entries, model %d", len(got), len(listed))
	}
	for i, w := range listed {
		if got[i].ID != w.id {
			rt.Fatalf("List[%d] = %s, model %s", i, got[i].ID, w.id)
		}
	}
	want := m.sorted()
	var total int64
	for _, w := range want {
		g, err := s.Get(w.id)
		if err != nil || g.Context.Key != w.key || g.Context.ContentHash != w.hash || g.CreatedAt != w.created ||
			g.AttemptCount != w.attempts || g.LastAttemptAt != w.lastAt || g.LastError != w.lastErr ||
			g.Context.FileSize != int64(len(w.data)) {
			rt.Fatalf("entry %s = %+v, %v; model %+v", w.id, g, err, *w)
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
	// The folder holds exactly the model's pairs: no temp file, no draft left.
	names := []string{".lock"}
	if len(m.rejected) > 0 {
		names = append(names, rejectedDir)
	}
	for _, w := range want {
		names = append(names, w.id+".bin", w.id+".json")
	}
	slices.Sort(names)
	ents, err := os.ReadDir(dir)
	if err != nil {
		rt.Fatal(err)
	}
	var onDisk []string
	for _, e := range ents {
		onDisk = append(onDisk, e.Name())
	}
	if !slices.Equal(onDisk, names) {
		rt.Fatalf("folder =\n%v\nmodel\n%v", onDisk, names)
	}
}
