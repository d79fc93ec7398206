package assettest

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Fault is one misbehaviour of the fake on one request. Its fields combine:
// Delay runs first, then Reset, CloseMidBody or Status answers. A Fault with
// only a Delay slows the request and then serves it normally.
type Fault struct {
	// Status is the status to answer with, before any validation.
	// 0 means the request is then served normally.
	Status int
	// Body is the response body sent with Status; empty means a small JSON
	// error document.
	Body string
	// RetryAfter is the Retry-After header value sent with Status.
	RetryAfter string
	// Delay is how long to wait before answering. It is cut short, and the
	// connection dropped unanswered, when the client goes away (the
	// request's context ends) or the server is closed.
	Delay time.Duration
	// Reset drops the connection with a TCP RST instead of answering.
	Reset bool
	// ReadBody, with Reset, is how many bytes of the request body to read
	// before the reset: a reset in the middle of an upload.
	ReadBody int64
	// CloseMidBody answers Status (200 if 0) with a Content-Length, sends
	// half of the promised body and closes the connection.
	CloseMidBody bool
}

// AddFaults queues faults for route: the next requests on route get them,
// one each, in order.
func (s *Server) AddFaults(route Route, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[route] = append(s.faults[route], faults...)
}

// SetFaultFunc makes fn decide the fault of each request on route once the
// queue of AddFaults is empty. n counts the requests on route, from 1 (see
// Requests). fn returns nil for no fault. It runs with the server's lock
// held, so it must not call the Server's methods. nil removes it.
func (s *Server) SetFaultFunc(route Route, fn func(r *http.Request, n int) *Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultFunc[route] = fn
}

// ClearFaults drops every queued fault and fault function.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = [numRoutes][]Fault{}
	s.faultFunc = [numRoutes]func(*http.Request, int) *Fault{}
}

// maxBufferedBody is the largest request body read ahead of a Delay.
const maxBufferedBody = 1 << 20

// applyFault acts out f and reports whether it answered the request.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f *Fault) bool {
	if f.Delay > 0 {
		// net/http notices a client that went away (and ends the request's
		// context) only once the body has been read, so read a small one
		// ahead. A large one is left alone: then Close still ends the wait.
		if r.ContentLength >= 0 && r.ContentLength <= maxBufferedBody && f.ReadBody == 0 {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				return true
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			resetConn(w)
			return true
		case <-s.quit:
			t.Stop()
			resetConn(w) // no answer: net/http would send an empty 200
			return true
		}
	}
	switch {
	case f.Reset:
		if f.ReadBody > 0 {
			io.CopyN(io.Discard, r.Body, f.ReadBody)
		}
		resetConn(w)
		return true
	case f.CloseMidBody:
		body := []byte(f.Body)
		if len(body) < 2 {
			body = []byte(`{"uploadUrl":"http://127.0.0.1/","token":"t","keys":[]}`)
		}
		status := f.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		w.Write(body[:len(body)/2])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		resetConn(w)
		return true
	case f.Status != 0:
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		if f.Body != "" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(f.Status)
			io.WriteString(w, f.Body)
			return true
		}
		writeError(w, f.Status, http.StatusText(f.Status), "INJECTED_FAULT")
		return true
	}
	return false
}

// resetConn takes over the connection and closes it with SO_LINGER 0, so
// the client sees a reset rather than an orderly close.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok { // HTTP/2 is never enabled, so this does not happen
		writeError(w, http.StatusInternalServerError, "connection cannot be reset", "")
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		if tc, ok := nc.NetConn().(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// writeError answers a JSON error document shaped like the real server's.
func writeError(w http.ResponseWriter, status int, msg, code string) {
	doc := map[string]string{"error": msg}
	if code != "" {
		doc["code"] = code
	}
	writeJSON(w, status, doc)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
