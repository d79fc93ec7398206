package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// Issue 18.1: idle connections must not take the proxy, or its control endpoint, down.
// fusou-proxy runs with 1,024 file descriptors. 1,500 client sockets that never send a
// request are opened against it and held (every fifth one CONNECTs to the game host and
// stalls its TLS handshake), which without a connection cap exhausts the descriptors. While
// they are held, /healthz and an asset through the proxy must answer within 10 s, and the
// proxy must close every one of the sockets within its 10 s timeout (SPEC §11).
func TestIdleConnectionsDoNotTakeItDown(t *testing.T) {
	if runtime.GOOS != "linux" {
		// Windows has no descriptor limit to exhaust (internal/connlimit tests the cap itself).
		t.Skip("Linux only: the child's descriptor limit is set with bash's ulimit and read back from /proc")
	}
	const (
		fdLimit = 1024
		sockets = 1500
		timeout = 10 * time.Second // SPEC §11: request head and TLS handshake
		slack   = 3 * time.Second
	)
	bash := requireTool(t, "bash")
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	in := startInstanceWith(t, game, api, "", withFDLimit(bash, fdLimit))
	if got := openFilesLimit(t, in.cmd.Process.Pid); got != fdLimit {
		t.Fatalf("fusou-proxy runs with %d descriptors, want %d", got, fdLimit)
	}
	maxConns := loggedCap(t, in)
	if maxConns >= sockets {
		t.Fatalf("cap %d: the test needs more sockets than the cap", maxConns)
	}
	client := in.client() // `ca export` runs before the flood
	control := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}

	held := holdIdleSockets(t, in.proxyAddr, sockets)

	healthTook := timed(t, "/healthz", func() error { return getOK(control, "http://"+in.controlAddr+"/healthz", []byte("ok")) })
	p := "/kcs2/img/title/01.png"
	assetTook := timed(t, "an asset through the proxy", func() error { return getOK(client, "https://"+gameHost+p, game.assets[p]) })
	for what, d := range map[string]time.Duration{"/healthz": healthTook, "the asset": assetTook} {
		if d > timeout {
			t.Errorf("%s took %v while the sockets were held, want under %v", what, d, timeout)
		}
	}

	closed := waitAllClosed(t, held, timeout+slack)
	slices.Sort(closed)
	evicted, _ := slices.BinarySearch(closed, time.Second) // closed at once: evicted at the cap
	t.Logf("fd limit %d, cap %d; %d idle sockets held (%d CONNECT + stalled TLS); /healthz answered in %v, the asset in %v; "+
		"the proxy closed %d at once (evicted at the cap) and the rest after %v to %v",
		fdLimit, maxConns, sockets, sockets/5, healthTook.Round(time.Millisecond), assetTook.Round(time.Millisecond),
		evicted, closed[evicted].Round(time.Millisecond), closed[len(closed)-1].Round(time.Millisecond))
	if evicted < sockets-maxConns {
		t.Errorf("%d sockets closed at once, want at least the %d over the cap", evicted, sockets-maxConns)
	}

	logs := in.logs.String()
	if n := strings.Count(logs, "Connection cap reached"); n != 1 {
		t.Errorf("%d cap warnings, want exactly 1 (rate-limited)", n)
	}
	for line := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, "Cannot handshake client") {
			t.Errorf("a handshake the proxy cut itself was logged as a warning: %s", line)
			break
		}
	}
	// And it still serves.
	if err := getOK(client, "https://"+gameHost+p, game.assets[p]); err != nil {
		t.Errorf("after the flood: %v", err)
	}
}

// withFDLimit runs the command under bash's `ulimit -n n`, which sets the soft and hard
// limits; exec keeps the process id, so signals still reach fusou-proxy.
func withFDLimit(bash string, n int) func(*exec.Cmd) {
	return func(cmd *exec.Cmd) {
		cmd.Args = append([]string{bash, "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, n)}, cmd.Args...)
		cmd.Path = bash
	}
}

// openFilesLimit reads a process's soft "Max open files" from /proc.
func openFilesLimit(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			n, err := strconv.Atoi(strings.Fields(rest)[0])
			if err != nil {
				t.Fatalf("limits line %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatal("no Max open files in /proc/pid/limits")
	return 0
}

// loggedCap is the effective cap from the start-up log line.
func loggedCap(t *testing.T, in *instance) int {
	t.Helper()
	for line := range strings.SplitSeq(in.logs.String(), "\n") {
		if !strings.Contains(line, "Proxy connection cap") {
			continue
		}
		var v struct {
			MaxConns int `json:"max_conns"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("cap line %q: %v", line, err)
		}
		return v.MaxConns
	}
	t.Fatalf("no Proxy connection cap line:\n%s", in.logs)
	return 0
}

// idleSocket is one held client socket; closed gets how long after opening the server
// closed it, or an error.
type idleSocket struct {
	conn   net.Conn
	closed chan time.Duration
}

// holdIdleSockets opens n sockets to the proxy that never send a complete request: every
// fifth CONNECTs to the game host and sends a third of a TLS record head. Each is read on
// its own goroutine until the proxy closes it.
func holdIdleSockets(t *testing.T, addr string, n int) []idleSocket {
	t.Helper()
	stall := "CONNECT " + gameHost + ":443 HTTP/1.1\r\nHost: " + gameHost + ":443\r\n\r\n\x16\x03"
	held := make([]idleSocket, 0, n)
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		opened := time.Now()
		if i%5 == 0 {
			if _, err := io.WriteString(c, stall); err != nil {
				t.Fatalf("socket %d: %v", i, err)
			}
		}
		s := idleSocket{conn: c, closed: make(chan time.Duration, 1)}
		go func() {
			_, _ = io.Copy(io.Discard, c) // the 200 of a CONNECT, then EOF or a reset
			s.closed <- time.Since(opened)
		}()
		held = append(held, s)
	}
	return held
}

// waitAllClosed waits for the proxy to close every socket and returns how long each took;
// it fails the test for one still open within.
func waitAllClosed(t *testing.T, held []idleSocket, within time.Duration) []time.Duration {
	t.Helper()
	deadline := time.NewTimer(within + 2*time.Second)
	defer deadline.Stop()
	out := make([]time.Duration, 0, len(held))
	for i, s := range held {
		select {
		case d := <-s.closed:
			if d > within {
				t.Errorf("socket %d closed after %v, want within %v", i, d, within)
			}
			out = append(out, d)
		case <-deadline.C:
			t.Fatalf("socket %d (and %d after it) still open", i, len(held)-i-1)
		}
	}
	return out
}

// timed runs f and returns how long it took; it fails the test if f fails.
func timed(t *testing.T, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := f(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return time.Since(start)
}

// getOK gets url and checks for a 200 with body want.
func getOK(c *http.Client, url string, want []byte) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
		return fmt.Errorf("status %d, %d bytes; want 200 and the expected %d bytes", resp.StatusCode, len(got), len(want))
	}
	return nil
}
