package pending

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var crashKills = flag.Int("crash.kills", 50, "how many times TestCrash kills its helper process")

// Environment of the helper process that TestCrash starts.
const (
	crashDirEnv  = "FUSOU_PENDING_CRASH_DIR"
	crashSeedEnv = "FUSOU_PENDING_CRASH_SEED"
)

// TestCrash starts a helper process that saves, commits batches of drafts, updates, rejects and
// deletes entries in a loop, reporting each on stdout only after the call returned, and SIGKILLs
// it at random moments. After each kill the store must reopen with every reported entry intact
// (bytes matching the hash, attempt_count at least the reported one), no deleted or rejected
// entry back, every rejected one complete in rejected/, nothing discarded as corrupt, and no temp
// file, draft or half pair left.
func TestCrash(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "pending_uploads")
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	type want struct {
		hash     string // empty when the save was not reported (only an attempt was)
		attempts int
	}
	wants := map[string]*want{}
	uncertain := map[string]bool{} // a delete started: present or absent are both fine
	deleted := map[string]bool{}
	rejected := map[string]bool{}
	reports := 0

	for kill := range *crashKills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+root, fmt.Sprintf("%s=%d", crashSeedEnv, seed+int64(kill)))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			r := bufio.NewReader(out)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return // a fragment without its newline was cut by the kill: not a report
				}
				lines <- strings.TrimSuffix(line, "\n")
			}
		}()
		handle := func(line string) {
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "saved":
				// The other worker may list, delete and report the entry before its saver
				// reports it; once a delete has started the entry is uncertain for good.
				if !uncertain[f[1]] {
					wants[f[1]] = &want{hash: f[2]}
				}
			case len(f) == 3 && f[0] == "attempt":
				n, _ := strconv.Atoi(f[2])
				if uncertain[f[1]] {
					return
				}
				if w := wants[f[1]]; w != nil {
					w.attempts = max(w.attempts, n)
				} else {
					wants[f[1]] = &want{attempts: n}
				}
			case len(f) == 2 && f[0] == "deleting":
				uncertain[f[1]] = true
				delete(wants, f[1])
			case len(f) == 2 && f[0] == "deleted":
				deleted[f[1]] = true
			case len(f) == 2 && f[0] == "rejecting":
				uncertain[f[1]] = true
				delete(wants, f[1])
			case len(f) == 2 && f[0] == "rejected":
				rejected[f[1]] = true
			default:
				t.Errorf("helper: %s", line)
			}
			reports++
		}

		// Kill after a random number of reports: the helper keeps working meanwhile, so the
		// signal lands at an arbitrary point of a save, rename, rewrite or removal.
		target := rng.IntN(12)
		seen := 0
		for seen <= target {
			line, ok := <-lines
			if !ok {
				break
			}
			handle(line)
			seen++
		}
		_ = cmd.Process.Kill() // SIGKILL on Unix
		for line := range lines {
			handle(line)
		}
		_ = cmd.Wait()
		if t.Failed() {
			t.Fatalf("helper stderr:\n%s", stderr.String())
		}

		// Recover as the next start would. The clock is two minutes ahead so that orphan
		// .bin files are past their minute of grace and must be swept now.
		s := mustOpen(t, dir, Options{Now: func() time.Time { return time.Now().Add(2 * time.Minute) }})
		for id, w := range wants {
			e, err := s.Get(id)
			if err != nil {
				t.Fatalf("kill %d: reported entry %s lost: %v\nstore log: %v\ncorrupt: %v\nhelper stderr: %s", kill, id, err, s.logs.All(), listDir(t, filepath.Join(dir, corruptDir)), stderr.String())
			}
			if w.hash != "" && e.Context.ContentHash != w.hash {
				t.Errorf("kill %d: %s hash %s, reported %s", kill, id, e.Context.ContentHash, w.hash)
			}
			if e.AttemptCount < w.attempts {
				t.Errorf("kill %d: %s attempt_count %d, reported %d", kill, id, e.AttemptCount, w.attempts)
			}
			data := readEntry(t, s.Store, id) // checks the SHA-256
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != e.Context.ContentHash {
				t.Errorf("kill %d: %s bytes do not match", kill, id)
			}
		}
		for id := range deleted {
			if _, err := s.Get(id); err == nil {
				t.Errorf("kill %d: deleted entry %s is back", kill, id)
			}
		}
		for id := range rejected {
			if _, err := s.Get(id); err == nil {
				t.Errorf("kill %d: rejected entry %s is pending again", kill, id)
			}
			raw, err := os.ReadFile(filepath.Join(dir, rejectedDir, id+".json"))
			if err != nil {
				t.Errorf("kill %d: rejected entry %s: %v", kill, id, err)
			} else if d, err := decodeMeta(id, raw); err != nil || d.meta.LastError != "400 from the crash test" {
				t.Errorf("kill %d: rejected entry %s: %v, last_error %q", kill, id, err, d.meta.LastError)
			}
			if _, err := os.Stat(filepath.Join(dir, rejectedDir, id+".bin")); err != nil {
				t.Errorf("kill %d: rejected entry %s: %v", kill, id, err)
			}
		}
		for _, n := range listDir(t, filepath.Join(dir, rejectedDir)) {
			if strings.HasPrefix(n, tempPrefix) {
				t.Errorf("kill %d: temp file left in rejected/: %s", kill, n)
			}
		}
		if n := s.logs.FilterMessage("Discarded pending upload").Len(); n != 0 {
			t.Errorf("kill %d: a crash left corrupt entries: %v", kill, s.logs.FilterMessage("Discarded pending upload").All())
		}
		names := listDir(t, dir)
		for _, n := range names {
			stem, ext := strings.TrimSuffix(n, filepath.Ext(n)), filepath.Ext(n)
			switch {
			case strings.HasPrefix(n, tempPrefix):
				t.Errorf("kill %d: temp file left: %s", kill, n)
			case ext == ".bin" && !contains(names, stem+".json"), ext == ".json" && !contains(names, stem+".bin"):
				t.Errorf("kill %d: half a pair left: %s", kill, n)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d kills, %d reports, %d live reported entries", *crashKills, reports, len(wants))
	if reports < *crashKills {
		t.Errorf("only %d reports in %d runs: the helper is not doing its work", reports, *crashKills)
	}
}

// crashBytes returns up to 200 KB of random bytes.
func crashBytes(rng *rand.Rand) []byte {
	data := make([]byte, 1+rng.IntN(200<<10))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return data
}

// crashDraft writes data as a draft of key.
func crashDraft(s *Store, key string, data []byte) (*Draft, error) {
	d, err := s.NewDraft()
	if err != nil {
		return nil, err
	}
	if _, err := d.Write(data); err != nil {
		d.Discard()
		return nil, err
	}
	d.Context, d.TargetURL = assetContext(key, data), "u"
	return d, nil
}

func contains(names []string, n string) bool {
	for _, m := range names {
		if m == n {
			return true
		}
	}
	return false
}

// TestCrashHelper is the process TestCrash kills; it does nothing in a normal run.
func TestCrashHelper(t *testing.T) {
	root := os.Getenv(crashDirEnv)
	if root == "" {
		return
	}
	seed, _ := strconv.ParseInt(os.Getenv(crashSeedEnv), 10, 64)
	if err := crashHelper(root, seed); err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(3)
	}
	os.Exit(0)
}

func crashHelper(root string, seed int64) error {
	s, err := Open(Options{Dir: filepath.Join(root, "pending_uploads"), Logger: stderrLogger()})
	if err != nil {
		return err
	}
	var mu sync.Mutex // one report line at a time
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		// One write per line, so a kill cannot interleave or split reports.
		_, _ = io.WriteString(os.Stdout, fmt.Sprintf(format, args...)+"\n")
	}
	// Two workers, as the live path and a retry pass would be; stop on their own after a while
	// in case the parent is gone.
	errs := make(chan error, 2)
	deadline := time.Now().Add(2 * time.Minute)
	for w := range 2 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(w)))
			for i := 0; time.Now().Before(deadline); i++ {
				if err := crashStep(s, rng, fmt.Sprintf("%d-%d-%d", os.Getpid(), w, i), report); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	if err := <-errs; err != nil {
		return err
	}
	return <-errs
}

// stderrLogger logs the helper's lines to stderr, which TestCrash shows when it fails.
func stderrLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zap.InfoLevel))
}

func crashStep(s *Store, rng *rand.Rand, name string, report func(string, ...any)) error {
	entries := s.List()
	op := rng.IntN(10)
	if len(entries) > 60 {
		op = 9 // keep the store small: delete
	}
	switch {
	case op == 0:
		// A small batch of drafts, as the committer writes them, sometimes with a second
		// capture of one of them. Each new entry is reported once Commit returns, before the
		// Sync: from then on a crash of the process must lose nothing.
		var batch []*Draft
		for j := range 1 + rng.IntN(3) {
			data := crashBytes(rng)
			d, err := crashDraft(s, fmt.Sprintf("assets/crash/%s-%d.png", name, j), data)
			if err != nil {
				return err
			}
			batch = append(batch, d)
			if j == 0 && rng.IntN(2) == 0 {
				twin, err := crashDraft(s, d.Context.Key, data)
				if err != nil {
					return err
				}
				batch = append(batch, twin)
			}
		}
		for _, r := range s.Commit(batch) {
			if r.Err != nil {
				return r.Err
			}
			if r.Created {
				report("saved %s %s", r.Entry.ID, r.Entry.Context.ContentHash)
			}
		}
		if _, err := s.Sync(); err != nil {
			return err
		}
	case op < 5 || len(entries) == 0:
		data := crashBytes(rng)
		c := assetContext("assets/crash/"+name+".png", data)
		e, _, err := s.Save(c, "u", map[string]string{"Origin": "o"}, bytes.NewReader(data))
		if err != nil {
			return err
		}
		report("saved %s %s", e.ID, e.Context.ContentHash)
	case op < 8:
		id := entries[rng.IntN(len(entries))].ID
		e, err := s.RecordAttempt(id, time.Now(), "503 from the crash test", time.Time{})
		if errors.Is(err, ErrNotFound) {
			return nil // the other worker deleted it
		}
		if err != nil {
			return err
		}
		report("attempt %s %d", id, e.AttemptCount)
	case op == 8:
		id := entries[rng.IntN(len(entries))].ID
		report("rejecting %s", id)
		err := s.Reject(id, "400 from the crash test")
		if errors.Is(err, ErrNotFound) {
			return nil // the other worker deleted or rejected it
		}
		if err != nil {
			return err
		}
		report("rejected %s", id)
	default:
		id := entries[rng.IntN(len(entries))].ID
		report("deleting %s", id)
		if err := s.Delete(id); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		report("deleted %s", id)
	}
	return nil
}
