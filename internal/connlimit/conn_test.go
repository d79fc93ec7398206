package connlimit

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net/http"
	"testing"
	"time"
)

// slack is how late a timeout may close a connection on a loaded machine. A close before
// half the timeout counts as too early: the client cannot see exactly when the server's wait
// began.
const slack = 3 * time.Second

// serveHTTP runs an http.Server configured by l, answering "ok".
func serveHTTP(tb testing.TB, l *Listener) {
	tb.Helper()
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	l.Configure(srv)
	go func() { _ = srv.Serve(l) }()
	tb.Cleanup(func() { _ = srv.Close() })
}

func TestSilentClientClosedAfterHeadTimeout(t *testing.T) {
	const head = 300 * time.Millisecond
	l := newTestListener(t, Options{HeadTimeout: head})
	serveHTTP(t, l)
	for name, send := range map[string]string{"silent": "", "partial head": "GET / HTTP/1.1\r\nHost: x\r\n"} {
		t.Run(name, func(t *testing.T) {
			c := dial(t, l)
			_, _ = io.WriteString(c, send)
			if d := waitClosed(t, c, head+slack); d < head/2 {
				t.Errorf("closed after %v, before the head timeout %v", d, head)
			}
		})
	}
}

func TestKeepAliveClosedAfterIdleTimeout(t *testing.T) {
	const idle = 400 * time.Millisecond
	l := newTestListener(t, Options{IdleTimeout: idle})
	serveHTTP(t, l)
	c := dial(t, l)
	br := bufio.NewReader(c)
	for range 2 { // two requests: the connection is kept alive between them
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if d := waitClosed(t, c, idle+slack); d < idle/2 {
		t.Errorf("closed after %v, before the idle timeout %v", d, idle)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	const hs = 300 * time.Millisecond
	l := newTestListener(t, Options{HandshakeTimeout: hs})
	client, c := pair(t, l)
	c.Handshaking()
	if d := waitClosed(t, client, hs+slack); d < hs/2 {
		t.Errorf("closed after %v, before the handshake timeout %v", d, hs)
	}
	// The slot is freed just after the socket closes: poll.
	deadline := time.Now().Add(slack)
	for st := l.Stats(); st.TimedOut != 1 || st.Open != 0; st = l.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want 1 timed out, 0 open", st)
		}
		time.Sleep(time.Millisecond)
	}
}

// A request in flight has no deadline; the next one is due within IdleTimeout.
func TestRequestInFlightHasNoDeadline(t *testing.T) {
	const short = 200 * time.Millisecond
	l := newTestListener(t, Options{HandshakeTimeout: short, HeadTimeout: short, IdleTimeout: short})
	client, c := pair(t, l)
	c.Handshaking()
	c.HandshakeDone()
	c.RequestStarted()
	stillOpen(t, client, 3*short)
	c.RequestDone()
	waitClosed(t, client, short+slack)
}

func TestTunnelClosedOnlyWhenSilent(t *testing.T) {
	const idle = 400 * time.Millisecond
	l := newTestListener(t, Options{TunnelIdleTimeout: idle})
	client, c := pair(t, l)
	c.Tunneling()
	go func() { _, _ = io.Copy(c, c) }() // an echo: bytes move both ways

	// Traffic for three times the idle timeout keeps it open.
	buf := make([]byte, 1)
	tick := time.NewTicker(idle / 8)
	defer tick.Stop()
	for end := time.Now().Add(3 * idle); time.Now().Before(end); <-tick.C {
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatalf("tunnel cut while in use: %v", err)
		}
		_ = client.SetReadDeadline(time.Now().Add(idle))
		if _, err := io.ReadFull(client, buf); err != nil {
			t.Fatalf("tunnel cut while in use: %v", err)
		}
	}
	// Then silence closes it.
	if d := waitClosed(t, client, idle+slack); d < idle/2 {
		t.Errorf("closed after %v of silence, before the tunnel idle timeout %v", d, idle)
	}
}

// A hijacked connection is a tunnel until told otherwise: busy, never evicted.
func TestHijackedCountsAsTunnel(t *testing.T) {
	l := newTestListener(t, Options{Max: 1})
	_, a := pair(t, l)
	l.connState(a, http.StateHijacked)
	l.mu.Lock()
	listed, w := a.listed, a.watch
	l.mu.Unlock()
	if listed || w != watchTunnel {
		t.Errorf("hijacked: listed=%v watch=%v, want busy with the tunnel watchdog", listed, w)
	}
}
