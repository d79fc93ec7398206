package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/fusou-proxy/fusou-proxy/internal/connlimit"
)

// The proxy reports a MITM'd connection's states through connlimit.Conn's method set.
var _ trackedConn = (*connlimit.Conn)(nil)

// slack is how late a timeout may close a connection on a loaded machine. A close before
// half the timeout counts as too early: the client cannot see exactly when the server's wait
// began.
const slack = 3 * time.Second

// serveLimited serves h's proxy on a connlimit listener configured by o, as
// cmd/fusou-proxy does, and returns its address.
func serveLimited(tb testing.TB, h *harness, o connlimit.Options) (string, *connlimit.Listener) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	l := connlimit.NewListener(ln, o)
	srv := &http.Server{Handler: h.proxy, ErrorLog: log.New(io.Discard, "", 0)}
	l.Configure(srv)
	go func() { _ = srv.Serve(l) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String(), l
}

// connect opens a connection to the proxy at addr and CONNECTs to target; it returns once
// the proxy answered 200.
func connect(tb testing.TB, addr, target string) net.Conn {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	// Byte by byte, so nothing after the response head is left in a buffer.
	var head strings.Builder
	b := make([]byte, 1)
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	for !strings.HasSuffix(head.String(), "\r\n\r\n") {
		if _, err := c.Read(b); err != nil {
			tb.Fatalf("CONNECT %s: %v after %q", target, err, head.String())
		}
		head.WriteByte(b[0])
	}
	_ = c.SetReadDeadline(time.Time{})
	if !strings.HasPrefix(head.String(), "HTTP/1.1 200") {
		tb.Fatalf("CONNECT %s: %q", target, head.String())
	}
	return c
}

// waitClosed reads c until the proxy closes it (EOF or reset) and returns how long that
// took; it fails the test if c is still open after within.
func waitClosed(tb testing.TB, c net.Conn, within time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(within))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			tb.Fatalf("connection still open after %v", within)
		}
		return time.Since(start)
	}
}

// get sends one keep-alive GET for path on a MITM'd connection; its body, or its error
// as text, comes on the channel.
func get(c net.Conn, br *bufio.Reader, path string) <-chan string {
	out := make(chan string, 1)
	go func() {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, gameHost)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		out <- string(b)
	}()
	return out
}

// mitmClient completes a TLS handshake with the proxy on a CONNECTed connection.
func mitmClient(tb testing.TB, h *harness, c net.Conn) (*tls.Conn, *bufio.Reader) {
	tb.Helper()
	tc := tls.Client(c, &tls.Config{ServerName: gameHost, RootCAs: h.mitmCA.pool})
	if err := tc.Handshake(); err != nil {
		tb.Fatal(err)
	}
	return tc, bufio.NewReader(tc)
}

func TestMITMStalledHandshakeIsClosed(t *testing.T) {
	const hs = 300 * time.Millisecond
	h := newHarness(t, nil, nil, nil)
	addr, l := serveLimited(t, h, connlimit.Options{HandshakeTimeout: hs})
	for name, hello := range map[string][]byte{
		"never starts":       nil,
		"partial hello":      {0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, // a record header and one byte of 512
		"half a record head": {0x16, 0x03},
	} {
		t.Run(name, func(t *testing.T) {
			c := connect(t, addr, gameHost+":443")
			_, _ = c.Write(hello)
			if d := waitClosed(t, c, hs+slack); d < hs/2 {
				t.Errorf("closed after %v, before the handshake timeout %v", d, hs)
			}
		})
	}
	if st := l.Stats(); st.TimedOut != 3 {
		t.Errorf("stats %+v, want 3 timed out", st)
	}
	for _, e := range h.logs.All() {
		if e.Level >= zapcore.WarnLevel {
			t.Errorf("warning for a handshake the proxy cut itself: %s %v", e.Message, e.ContextMap())
		}
	}
}

// slowGame is a harness whose game server answers /fast at once and /slow when release is
// called (at the latest when the test ends, so a failing test cannot hang).
func slowGame(t *testing.T) (h *harness, release func()) {
	t.Helper()
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	upCA := newTestCA(t, "game server CA")
	mux := http.NewServeMux()
	mux.HandleFunc("/fast", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "fast") })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, _ *http.Request) {
		<-ch
		fmt.Fprint(w, "slow")
	})
	srv, _ := startTLSServer(t, upCA.leaf(t, "*.kancolle-server.com"), mux)
	t.Cleanup(release) // runs before the server's Close, which waits for handlers
	return newHarness(t, upCA.pool, []DialRule{ruleTo(t, "", "443", srv)}, nil), release
}

func TestMITMKeepAliveClosedAfterIdleTimeout(t *testing.T) {
	const idle = 400 * time.Millisecond
	h, release := slowGame(t)
	addr, _ := serveLimited(t, h, connlimit.Options{IdleTimeout: idle, HeadTimeout: idle})

	tc, br := mitmClient(t, h, connect(t, addr, gameHost+":443"))
	for range 2 {
		if got := <-get(tc, br, "/fast"); got != "fast" {
			t.Fatalf("body %q", got)
		}
	}
	// A response that takes longer than the idle timeout: busy, so not cut.
	done := get(tc, br, "/slow")
	select {
	case <-done:
		t.Fatal("slow response arrived before it was released")
	case <-time.After(3 * idle):
	}
	release()
	if got := <-done; got != "slow" {
		t.Fatalf("slow body %q", got)
	}
	// Then idle: closed.
	if d := waitClosed(t, tc, idle+slack); d < idle/2 {
		t.Errorf("closed after %v, before the idle timeout %v", d, idle)
	}
}

// At the cap, a MITM'd connection with a request in flight stays; the idle one goes.
func TestMITMBusyConnectionIsNotEvicted(t *testing.T) {
	h, release := slowGame(t)
	addr, l := serveLimited(t, h, connlimit.Options{Max: 2})

	busy, busyR := mitmClient(t, h, connect(t, addr, gameHost+":443"))
	done := get(busy, busyR, "/slow")
	idle, idleR := mitmClient(t, h, connect(t, addr, gameHost+":443"))
	if got := <-get(idle, idleR, "/fast"); got != "fast" {
		t.Fatalf("body %q", got)
	}
	waitFor(t, "the slow request upstream", func() bool { return h.proxy.Stats().Requests == 2 })

	third, err := net.Dial("tcp", addr) // a third client at the cap
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	waitClosed(t, idle, waitTimeout)
	release()
	if got := <-done; got != "slow" {
		t.Fatalf("busy connection's body %q, want slow", got)
	}
	if st := l.Stats(); st.Evicted != 1 {
		t.Errorf("stats %+v, want 1 evicted", st)
	}
}

func TestRawTunnelCutOnlyWhenSilent(t *testing.T) {
	const idle = 400 * time.Millisecond
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	_, port, _ := net.SplitHostPort(echo.Addr().String())
	h := newHarness(t, nil, []DialRule{{Host: "tunnel.example", ToHost: "127.0.0.1", ToPort: port}}, nil)
	addr, _ := serveLimited(t, h, connlimit.Options{TunnelIdleTimeout: idle, IdleTimeout: idle / 2})
	c := connect(t, addr, "tunnel.example:443")

	// Traffic for three times the tunnel idle timeout (and six times the idle timeout of
	// requests) keeps it open.
	buf := make([]byte, 1)
	tick := time.NewTicker(idle / 8)
	defer tick.Stop()
	for end := time.Now().Add(3 * idle); time.Now().Before(end); <-tick.C {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatalf("tunnel cut while in use: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(idle))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("tunnel cut while in use: %v", err)
		}
	}
	if d := waitClosed(t, c, idle+slack); d < idle/2 {
		t.Errorf("closed after %v of silence, before the tunnel idle timeout %v", d, idle)
	}
}
