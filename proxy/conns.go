package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"sync"

	"github.com/elazarl/goproxy"
)

// trackedConn is a client connection whose listener caps and times out connections
// (internal/connlimit.Conn). The http.Server reports a plain connection's requests to it;
// goproxy reads a MITM'd connection's requests itself after hijacking it, so the proxy
// reports where such a connection stands. A raw tunnel needs nothing: a hijacked connection
// counts as a tunnel until told otherwise.
type trackedConn interface {
	Handshaking()    // the TLS handshake with the client begins
	HandshakeDone()  // ...and (nearly) completed: the first request head is due
	RequestStarted() // a request head was read
	RequestDone()    // its response was written: idle until the next
	Tunneling()      // the connection became a WebSocket: bytes relayed unparsed
}

// mitmConn carries a MITM'd connection's tracker from its hijack to goproxy's callbacks for
// the connection (ProxyCtx.UserData, which goproxy copies into each request's context).
type mitmConn struct {
	tracked trackedConn // nil when the listener does not track connections
}

// writerKey is the request context key of a CONNECT's *trackingWriter, for handleConnect.
type writerKey struct{}

func withWriter(r *http.Request, tw *trackingWriter) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), writerKey{}, tw))
}

// markMITM tells the CONNECT's writer that its connection will be decrypted, and gives
// ctx what goproxy's later callbacks for that connection need.
func markMITM(ctx *goproxy.ProxyCtx) {
	tw, _ := ctx.Req.Context().Value(writerKey{}).(*trackingWriter)
	if tw == nil {
		return
	}
	tw.mitm = &mitmConn{}
	ctx.UserData = tw.mitm
}

// trackerOf returns the tracker of the MITM'd connection ctx belongs to, or nil (plain HTTP,
// or an untracked listener).
func trackerOf(ctx *goproxy.ProxyCtx) trackedConn {
	if ctx == nil {
		return nil
	}
	if mc, _ := ctx.UserData.(*mitmConn); mc != nil {
		return mc.tracked
	}
	return nil
}

// onHandshakeDone makes cfg report the end of the client's handshake to tc. The server
// side calls VerifyConnection once the client's last flight is all that remains.
func onHandshakeDone(cfg *tls.Config, tc trackedConn) {
	cfg.VerifyConnection = func(tls.ConnectionState) error {
		tc.HandshakeDone()
		return nil
	}
}

// trackResponse reports resp's end to tc: when goproxy closes its body, which it does once
// the response is written. A 101 makes the connection a WebSocket tunnel; its body is the
// upstream connection and is left as is.
func trackResponse(tc trackedConn, resp *http.Response) {
	switch {
	case resp == nil: // goproxy closes the connection
	case resp.StatusCode == http.StatusSwitchingProtocols:
		tc.Tunneling()
	case resp.Body == nil || resp.Body == http.NoBody:
		tc.RequestDone()
	default:
		resp.Body = &doneBody{ReadCloser: resp.Body, done: tc.RequestDone}
	}
}

// doneBody calls done once, when closed.
type doneBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}
