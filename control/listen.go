package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"go.uber.org/zap"
)

// ErrNotLoopback is returned by Listen for a non-loopback control.listen without
// control.allow_remote.
var ErrNotLoopback = errors.New("not a loopback address")

// Timeouts of the http.Server run by Serve. The routes answer at once, so these only bound
// slow or stalled clients (slowloris).
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 5 * time.Second
)

// Listen opens the control endpoint's TCP listener on addr (control.listen). Unless
// allowRemote (control.allow_remote), addr must name localhost or a loopback IP, and the
// address actually bound is checked to be loopback too, in case "localhost" resolves oddly.
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("parse control.listen %q: %w", addr, err)
	}
	if !allowRemote && !isLocalhost(host) {
		if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("control.listen %q: %w (use 127.0.0.1, [::1] or localhost, or set control.allow_remote = true)", addr, ErrNotLoopback)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on control.listen %q: %w", addr, err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !allowRemote && (!ok || !tcp.IP.IsLoopback()) {
		_ = ln.Close()
		return nil, fmt.Errorf("control.listen %q bound %s: %w", addr, ln.Addr(), ErrNotLoopback)
	}
	return ln, nil
}

// Serve serves s on ln until ctx is done, then shuts down gracefully (waiting up to
// five seconds for requests in flight) and returns nil. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    MaxBodyBytes,
		ErrorLog:          zap.NewStdLog(s.log),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve control endpoint: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
		<-errc
		return fmt.Errorf("shut down control endpoint: %w", err)
	}
	<-errc // http.ErrServerClosed
	return nil
}
