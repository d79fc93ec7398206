// Package connlimit bounds the client connections of a listener, as Go's http.Server
// timeouts and nginx's connection limit do (SPEC §11): how many may be open at once, and how
// long one may stall a TLS handshake, take to send a request head or sit idle.
//
// Start with NewListener: it wraps a net.Listener, and every connection it accepts is a
// *Conn. Serve an http.Server on it after Listener.Configure, which sets the server's head
// and idle timeouts and its ConnState hook: the server then reports what each connection is
// doing. A handler that hijacks a connection (a CONNECT tunnel) reports it through Conn's
// methods instead; until it does, a hijacked connection counts as a tunnel.
//
// At Options.Max open connections, Accept closes the connection that has been idle longest
// with no request in flight to admit the new one, as nginx drains idle keep-alive
// connections; while every connection is busy, Accept waits for one to close or go idle.
// EffectiveMax lowers a configured cap to what the file-descriptor limit allows.
package connlimit

import (
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults for Options' zero fields.
const (
	// DefaultHeadTimeout bounds the wait for a complete request head: the first one, from
	// the connection's opening or the end of its TLS handshake, and later ones on a plain
	// connection once their first byte arrives.
	DefaultHeadTimeout = 10 * time.Second
	// DefaultHandshakeTimeout bounds a TLS handshake inside a CONNECT tunnel.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultIdleTimeout bounds the wait for the next request on a keep-alive connection.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultTunnelIdleTimeout closes a tunnel (a raw CONNECT, a WebSocket) after this long
	// without a byte either way. It is well above WebSocket keep-alive intervals (tens of
	// seconds) and above how long browsers keep an idle pooled connection (Firefox 115 s,
	// Chrome 5 min), so a tunnel in use is never cut.
	DefaultTunnelIdleTimeout = 10 * time.Minute
)

// capWarnInterval rate-limits the log line about connections closed at the cap.
const capWarnInterval = time.Minute

// Options configure a Listener. A zero field takes its default.
type Options struct {
	// Max is the most connections open at once (proxy.max_conns). Zero or less: no cap.
	Max int
	// HeadTimeout: see DefaultHeadTimeout.
	HeadTimeout time.Duration
	// HandshakeTimeout: see DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout: see DefaultIdleTimeout.
	IdleTimeout time.Duration
	// TunnelIdleTimeout: see DefaultTunnelIdleTimeout.
	TunnelIdleTimeout time.Duration
	// Logger gets one warning a minute at most while connections are closed at the cap.
	// Nil: zap.NewNop().
	Logger *zap.Logger
}

func (o Options) withDefaults() Options {
	if o.Max <= 0 {
		o.Max = math.MaxInt
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HeadTimeout, DefaultHeadTimeout)
	def(&o.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	def(&o.TunnelIdleTimeout, DefaultTunnelIdleTimeout)
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// Stats are a Listener's counters.
type Stats struct {
	Open     int    // connections open now
	Max      int    // the cap
	Evicted  uint64 // idle connections closed to admit a new one
	TimedOut uint64 // connections closed by a handshake, head, idle or tunnel timeout
}

// Listener is a net.Listener that caps and times out its connections. It is safe for
// concurrent use.
type Listener struct {
	net.Listener
	o     Options
	epoch time.Time // origin of the monotonic clock behind Conn.lastIO

	// mu guards open, the idle list (oldest, newest and every Conn's prev/next), lastWarn,
	// and each Conn's state fields.
	mu             sync.Mutex
	open           int
	oldest, newest *Conn // connections that may be evicted, longest idle first
	lastWarn       time.Time

	changed   chan struct{} // a slot was freed or a connection went idle; capacity 1
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	evicted, timedOut atomic.Uint64
}

// NewListener wraps inner.
func NewListener(inner net.Listener, o Options) *Listener {
	return &Listener{
		Listener: inner,
		o:        o.withDefaults(),
		epoch:    time.Now(),
		changed:  make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// Configure sets srv's head and idle timeouts to l's and its ConnState hook to l's; then
// serve srv on l. It replaces any ConnState hook srv had.
func (l *Listener) Configure(srv *http.Server) {
	srv.ReadHeaderTimeout = l.o.HeadTimeout
	srv.IdleTimeout = l.o.IdleTimeout
	srv.ConnState = l.connState
}

// Accept waits for a connection and admits it, closing the longest-idle one at the cap.
// The connection is a *Conn, idle until its first request.
func (l *Listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if err := l.admit(); err != nil {
		_ = nc.Close()
		return nil, err
	}
	c := &Conn{Conn: nc, l: l}
	c.touch()
	l.mu.Lock()
	l.pushIdle(c)
	l.mu.Unlock()
	return c, nil
}

// Close stops Accept, including one waiting for a slot. Open connections stay open.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	open := l.open
	l.mu.Unlock()
	return Stats{Open: open, Max: l.o.Max, Evicted: l.evicted.Load(), TimedOut: l.timedOut.Load()}
}

// admit takes a slot for a new connection: a free one, or that of the connection idle
// longest, which it closes. While every connection is busy it waits for a change.
func (l *Listener) admit() error {
	for {
		l.mu.Lock()
		if l.open < l.o.Max {
			l.open++
			l.mu.Unlock()
			return nil
		}
		victim := l.oldest
		warn := false
		if victim != nil {
			l.unlistIdle(victim)
			victim.gone = true // its last state changes are ignored
			if now := time.Now(); now.Sub(l.lastWarn) >= capWarnInterval {
				l.lastWarn, warn = now, true
			}
		}
		l.mu.Unlock()
		if victim == nil {
			select {
			case <-l.changed:
				continue
			case <-l.done:
				return net.ErrClosed
			}
		}
		l.evicted.Add(1)
		_ = victim.Close() // frees its slot
		if warn {
			l.o.Logger.Warn("Connection cap reached: closing the connections idle longest to admit new ones",
				zap.Int("max_conns", l.o.Max), zap.Uint64("evicted_total", l.evicted.Load()))
		}
	}
}

// release frees c's slot; c.Close calls it once.
func (l *Listener) release(c *Conn) {
	l.mu.Lock()
	l.unlistIdle(c)
	c.gone = true
	if c.timer != nil {
		c.timer.Stop()
	}
	l.open--
	l.mu.Unlock()
	l.signal()
}

// signal wakes an Accept waiting for a slot, without blocking.
func (l *Listener) signal() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// connState is the http.Server's ConnState hook. The server sets its own head and idle
// deadlines, so only hijacked connections get a watchdog here.
func (l *Listener) connState(nc net.Conn, s http.ConnState) {
	c, ok := nc.(*Conn)
	if !ok || c.l != l {
		return
	}
	switch s {
	case http.StateActive:
		c.set(false, watchNone, 0)
	case http.StateIdle:
		c.set(true, watchNone, 0)
	case http.StateHijacked:
		c.Tunneling()
	}
}

// pushIdle puts c at the newest end of the idle list. l.mu must be held and c unlisted.
func (l *Listener) pushIdle(c *Conn) {
	c.prev, c.next, c.listed = l.newest, nil, true
	if l.newest != nil {
		l.newest.next = c
	} else {
		l.oldest = c
	}
	l.newest = c
}

// unlistIdle takes c off the idle list if it is on it. l.mu must be held.
func (l *Listener) unlistIdle(c *Conn) {
	if !c.listed {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.oldest = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.newest = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
}
