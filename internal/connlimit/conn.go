package connlimit

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// watch is what a connection's watchdog waits for.
type watch uint8

const (
	watchNone     watch = iota // nothing: a request is in flight, or the http.Server keeps the deadlines
	watchDeadline              // a fixed deadline: a handshake, a request head, the next request
	watchTunnel                // TunnelIdleTimeout without a byte either way
)

// Conn is a connection accepted by a Listener. Closing it frees its slot. A handler that
// hijacks it reports what it does through the methods below; each is safe to call at any
// time, and does nothing once the connection is closed.
type Conn struct {
	net.Conn
	l *Listener

	lastIO atomic.Int64 // when a byte last moved either way, as l.epoch's monotonic offset

	closeOnce sync.Once
	closeErr  error

	// Guarded by l.mu.
	prev, next *Conn // neighbours in the idle list
	listed     bool  // on the idle list: may be evicted
	gone       bool  // closed or chosen for eviction: state changes are ignored
	watch      watch
	deadline   time.Time   // for watchDeadline
	timer      *time.Timer // the watchdog; nil until first armed
}

// Handshaking reports that a TLS handshake inside a tunnel begins. The connection is idle
// (no request yet, so it may be evicted) and is closed unless HandshakeDone or
// RequestStarted follows within HandshakeTimeout.
func (c *Conn) Handshaking() { c.set(true, watchDeadline, c.l.o.HandshakeTimeout) }

// HandshakeDone reports that the TLS handshake inside a tunnel (nearly) completed: the first
// request head must be complete within HeadTimeout.
func (c *Conn) HandshakeDone() { c.set(true, watchDeadline, c.l.o.HeadTimeout) }

// RequestStarted reports that a request head was read inside a tunnel: the connection is
// busy, never evicted, and has no deadline until RequestDone.
func (c *Conn) RequestStarted() { c.set(false, watchNone, 0) }

// RequestDone reports that a response inside a tunnel was written: the connection is idle,
// and the next request head must be complete within IdleTimeout.
func (c *Conn) RequestDone() { c.set(true, watchDeadline, c.l.o.IdleTimeout) }

// Tunneling reports that the connection relays bytes it does not parse (a raw CONNECT
// tunnel, a WebSocket). It is busy, never evicted: its traffic cannot tell a pause from a
// request in flight. It is closed after TunnelIdleTimeout without a byte either way. A
// hijacked connection starts in this state.
func (c *Conn) Tunneling() { c.set(false, watchTunnel, 0) }

func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.touch()
	}
	return n, err
}

func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.touch()
	}
	return n, err
}

// Close closes the connection and frees its slot, once.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.Conn.Close()
		c.l.release(c) // after the close, so the count never undercounts descriptors
	})
	return c.closeErr
}

// CloseWrite half-closes a TCP connection. goproxy half-closes tunnels whose ends have it,
// so a client's FIN reaches the server while the server's reply still flows back.
func (c *Conn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return errors.ErrUnsupported
}

// CloseRead is CloseWrite's other half.
func (c *Conn) CloseRead() error {
	if hc, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return hc.CloseRead()
	}
	return errors.ErrUnsupported
}

// set records what c does: whether it may be evicted (idle goes to the newest end of the
// idle list) and what its watchdog waits for (d: a deadline's distance from now).
func (c *Conn) set(idle bool, w watch, d time.Duration) {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.gone {
		return
	}
	l.unlistIdle(c)
	if idle {
		l.pushIdle(c)
		l.signal()
	}
	c.arm(w, d)
}

// arm sets the watchdog. l.mu must be held.
func (c *Conn) arm(w watch, d time.Duration) {
	c.watch = w
	switch w {
	case watchNone:
		if c.timer != nil {
			c.timer.Stop()
		}
		return
	case watchDeadline:
		c.deadline = time.Now().Add(d)
	case watchTunnel:
		c.touch()
		d = c.l.o.TunnelIdleTimeout
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.expire)
	} else {
		c.timer.Reset(d)
	}
}

// expire is the watchdog: it closes c when what it waits for has passed, and otherwise
// waits for what is left (a tunnel that moved bytes since the timer was set).
func (c *Conn) expire() {
	l := c.l
	l.mu.Lock()
	var left time.Duration
	switch {
	case c.gone || c.watch == watchNone:
		l.mu.Unlock()
		return
	case c.watch == watchDeadline:
		left = time.Until(c.deadline)
	default:
		left = l.o.TunnelIdleTimeout - c.sinceIO()
	}
	if left > 0 {
		c.timer.Reset(left)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.timedOut.Add(1)
	_ = c.Close()
}

// touch records that a byte moved.
func (c *Conn) touch() { c.lastIO.Store(int64(time.Since(c.l.epoch))) }

// sinceIO is how long ago a byte last moved.
func (c *Conn) sinceIO() time.Duration {
	return time.Since(c.l.epoch) - time.Duration(c.lastIO.Load())
}
