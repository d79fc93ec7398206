package assets

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/pending"
)

const crashChildEnv = "FUSOU_ASSETS_CRASH_CHILD"

// TestCrashChild is the subprocess of TestKilledAfterCommitLosesNothing: it captures assets
// forever and reports each one on stdout once the store says it is committed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("only run as the crash test's subprocess")
	}
	st, err := pending.Open(pending.Options{Dir: filepath.Join(dir, "pending_uploads")})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	sess := &SessionHolder{} // no session: everything stays pending, nothing leaves the machine
	up, _ := NewUploader(UploaderOptions{Endpoint: "http://127.0.0.1:1/api/asset-sync/upload", Session: sess})
	p, err := NewPipeline(PipelineOptions{Store: st, Uploader: up, Session: sess, Workers: 1, QueueSize: 16,
		MaxAssetBytes: MaxAssetBytes, Endpoint: "http://127.0.0.1:1/api/asset-sync/upload",
		Settings: Settings{Enable: true, Extensions: []string{"png"}}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	p.Run(context.Background())
	f := &fixture{p: p, store: st}
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		body := png(i)
		key, hash := fmt.Sprintf("assets/kcs2/img/crash/%d.png", i), sum(body)
		f.capture("/kcs2/img/crash/"+fmt.Sprint(i)+".png", body, "")
		for !st.Has(key, hash) {
			time.Sleep(100 * time.Microsecond) // the committer runs in the background
		}
		fmt.Fprintf(out, "committed %s %s\n", key, hash)
		out.Flush()
	}
}

func TestKilledAfterCommitLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	dir := t.TempDir()
	for kill := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		committed := map[string]string{}
		sc := bufio.NewScanner(stdout)
		target := 3 + rand.IntN(40)
		for sc.Scan() && len(committed) < target {
			var key, hash string
			if _, err := fmt.Sscanf(sc.Text(), "committed %s %s", &key, &hash); err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			committed[key] = hash
		}
		cmd.Process.Signal(syscall.SIGKILL)
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		if len(committed) < target {
			t.Fatalf("kill %d: the child reported only %d commits", kill, len(committed))
		}

		st, err := pending.Open(pending.Options{Dir: filepath.Join(dir, "pending_uploads")})
		if err != nil {
			t.Fatalf("kill %d: reopen: %v", kill, err)
		}
		for key, hash := range committed {
			if !st.Has(key, hash) {
				t.Errorf("kill %d: committed %s lost", kill, key)
			}
		}
		for _, e := range st.List() { // every entry's bytes are whole
			r, err := st.Open(e.ID)
			if err != nil {
				t.Errorf("kill %d: entry %s unreadable: %v", kill, e.Context.Key, err)
				continue
			}
			r.Close()
		}
		leftovers := mustGlob(t, filepath.Join(dir, "pending_uploads", ".tmp-*"))
		if strings.Join(leftovers, "") != "" {
			t.Errorf("kill %d: temp files left in the store: %v", kill, leftovers)
		}
		st.Close()
	}
}
