package connlimit

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"
)

// newTestListener is a Listener on a loopback port.
func newTestListener(tb testing.TB, o Options) *Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	l := NewListener(ln, o)
	tb.Cleanup(func() { _ = l.Close() })
	return l
}

// dial opens a client connection to l; the kernel completes it before l accepts it.
func dial(tb testing.TB, l *Listener) net.Conn {
	tb.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// pair dials l and accepts the connection: the client's end and the server's.
func pair(tb testing.TB, l *Listener) (net.Conn, *Conn) {
	tb.Helper()
	client := dial(tb, l)
	nc, err := l.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = nc.Close() })
	return client, nc.(*Conn)
}

// gone reports whether c was closed or chosen for eviction.
func gone(c *Conn) bool {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	return c.gone
}

// waitClosed reads client until the server closes it (EOF or reset) and returns how long
// that took; it fails the test if the connection is still open after within.
func waitClosed(tb testing.TB, client net.Conn, within time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	_ = client.SetReadDeadline(start.Add(within))
	buf := make([]byte, 4096)
	for {
		_, err := client.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			tb.Fatalf("connection still open after %v", within)
		}
		return time.Since(start)
	}
}

// stillOpen fails the test if the server closes client within d.
func stillOpen(tb testing.TB, client net.Conn, d time.Duration) {
	tb.Helper()
	_ = client.SetReadDeadline(time.Now().Add(d))
	_, err := client.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		tb.Fatalf("connection closed or readable (%v), want it open and silent", err)
	}
	_ = client.SetReadDeadline(time.Time{})
}

// checkIdleList verifies the idle list's links and that it holds no gone connection.
func checkIdleList(tb testing.TB, l *Listener) {
	tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var prev *Conn
	n := 0
	for c := l.oldest; c != nil; c = c.next {
		if c.prev != prev || !c.listed || c.gone {
			tb.Fatalf("idle list broken at entry %d", n)
		}
		prev = c
		n++
	}
	if l.newest != prev || n > l.open {
		tb.Fatalf("idle list: %d entries, %d open, newest %p want %p", n, l.open, l.newest, prev)
	}
}

func TestEvictsLongestIdleNeverBusy(t *testing.T) {
	l := newTestListener(t, Options{Max: 3})
	_, a := pair(t, l)
	_, b := pair(t, l)
	cc, c := pair(t, l)
	a.RequestStarted()               // oldest, but busy
	l.connState(b, http.StateActive) // a request through the http.Server...
	l.connState(b, http.StateIdle)   // ...done: b is now the most recently idle
	checkIdleList(t, l)

	_, d := pair(t, l) // at the cap: c, idle since it opened, goes
	if !gone(c) || gone(a) || gone(b) {
		t.Fatalf("evicted a=%v b=%v c=%v; want only c", gone(a), gone(b), gone(c))
	}
	waitClosed(t, cc, 5*time.Second)
	_, _ = pair(t, l) // then b, idle longer than the fresh d
	if !gone(b) || gone(a) || gone(d) {
		t.Fatalf("evicted a=%v b=%v d=%v; want b", gone(a), gone(b), gone(d))
	}
	if st := l.Stats(); st.Open != 3 || st.Evicted != 2 {
		t.Errorf("stats %+v, want 3 open and 2 evicted", st)
	}
	checkIdleList(t, l)
}

func TestAcceptWaitsWhileEveryConnectionIsBusy(t *testing.T) {
	l := newTestListener(t, Options{Max: 2})
	_, a := pair(t, l)
	_, b := pair(t, l)
	a.RequestStarted()
	b.Tunneling()

	accepted := make(chan net.Conn, 1)
	dial(t, l)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
		}
		accepted <- c
	}()
	select {
	case <-accepted:
		t.Fatal("admitted a third connection while both were busy")
	case <-time.After(200 * time.Millisecond):
	}
	a.RequestDone() // a may now be evicted: the waiting Accept takes its slot
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waiting after a connection went idle")
	}
	if !gone(a) || gone(b) {
		t.Errorf("evicted a=%v b=%v, want a only", gone(a), gone(b))
	}
}

func TestCloseStopsAWaitingAccept(t *testing.T) {
	l := newTestListener(t, Options{Max: 1})
	_, a := pair(t, l)
	a.RequestStarted()
	dial(t, l)
	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	_ = l.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Accept succeeded after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waiting after Close")
	}
}

// Many clients and server goroutines changing state at random, with evictions: the count
// never passes the cap and ends at zero. The cap is reached by construction, not by timing:
// the first max connections stay idle and every client holds its first one open until the
// next accept has evicted one (under wine, accepting is slow enough that connections which
// close at once never pile up to the cap).
func TestCountsStayRightUnderConcurrency(t *testing.T) {
	const max, clients, rounds = 8, 24, 40
	l := newTestListener(t, Options{Max: max})
	var server sync.WaitGroup
	accepting := make(chan struct{})
	full := make(chan struct{}) // closed once connection max+1 is accepted: one was evicted
	go func() {
		defer close(accepting)
		for n := 1; ; n++ {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			if st := l.Stats(); st.Open > max {
				t.Errorf("%d open, cap %d", st.Open, max)
			}
			if n == max+1 {
				close(full)
			}
			server.Add(1)
			go serveRandomly(&server, nc.(*Conn), n > max)
		}
	}()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range rounds {
				c, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = c.Write([]byte("x"))
				if i == 0 {
					select {
					case <-full:
					case <-accepting: // the accept loop failed
					}
				}
				_ = c.Close()
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().Open != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still counted open after every client closed", l.Stats().Open)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = l.Close()
	<-accepting // no server.Add after this
	server.Wait()
	checkIdleList(t, l)
	if l.oldest != nil {
		t.Error("idle list not empty")
	}
	if l.Stats().Evicted == 0 {
		t.Error("nothing evicted: the test never reached the cap")
	}
}

// serveRandomly moves c through random states if random is set (else leaves it idle), then
// reads it to its end and closes it.
func serveRandomly(wg *sync.WaitGroup, c *Conn, random bool) {
	defer wg.Done()
	steps := []func(){c.Handshaking, c.HandshakeDone, c.RequestStarted, c.RequestDone, c.Tunneling,
		func() { c.l.connState(c, http.StateActive) }, func() { c.l.connState(c, http.StateIdle) }}
	for n := rand.IntN(6); random && n > 0; n-- {
		steps[rand.IntN(len(steps))]()
	}
	_, _ = io.Copy(io.Discard, c)
	_ = c.Close()
}

func TestFitFDs(t *testing.T) {
	cases := []struct {
		want  int
		limit uint64
		got   int
	}{
		{4096, 0, 4096},       // no limit (Windows)
		{4096, 1 << 20, 4096}, // plenty
		{4096, 8448, 4096},    // exactly enough: 256 reserved, 2 each
		{4096, 8447, 4095},    // one short
		{4096, 1024, 384},     // (1024-256)/2
		{4096, 256, 96},       // a quarter reserved: (256-64)/2
		{4096, 1, 1},          // never zero
		{10, 1 << 62, 10},     // huge (RLIM_INFINITY-like)
		{4096, ^uint64(0), 4096},
	}
	for _, c := range cases {
		if got := fitFDs(c.want, c.limit); got != c.got {
			t.Errorf("fitFDs(%d, %d) = %d, want %d", c.want, c.limit, got, c.got)
		}
	}
}

func TestEffectiveMaxReadsTheLimit(t *testing.T) {
	n, limit := EffectiveMax(4096)
	if n < 1 || n > 4096 {
		t.Errorf("EffectiveMax = %d, want 1..4096", n)
	}
	if limit != 0 && n != fitFDs(4096, limit) {
		t.Errorf("EffectiveMax = %d with limit %d, want %d", n, limit, fitFDs(4096, limit))
	}
}
