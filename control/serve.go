package control

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// route is one path: whether it needs the bearer token, and its handler per method.
type route struct {
	auth     bool
	handlers map[string]http.HandlerFunc
}

// handler returns the handler for method; HEAD is answered by the GET handler.
func (rt *route) handler(method string) http.HandlerFunc {
	if h, ok := rt.handlers[method]; ok {
		return h
	}
	if method == http.MethodHead {
		return rt.handlers[http.MethodGet]
	}
	return nil
}

// allow lists the route's methods for an Allow header.
func (rt *route) allow() string {
	var ms []string
	for m := range rt.handlers {
		ms = append(ms, m)
		if m == http.MethodGet {
			ms = append(ms, http.MethodHead)
		}
	}
	slices.Sort(ms)
	return strings.Join(ms, ", ")
}

// ServeHTTP runs the checks described in the package comment, then the route's handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	name := "(unmatched)" // the client's path is not logged: it is the client's input
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("control handler panicked", zap.String("method", r.Method),
				zap.String("route", name), zap.Stack("stack"))
			if !rec.wrote {
				clear(rec.Header())
				setCommonHeaders(rec.Header())
				writeError(rec, http.StatusInternalServerError, "internal error")
			}
		}
		s.logRequest(r.Method, name, rec.status, time.Since(start))
	}()
	setCommonHeaders(w.Header())

	if !loopbackHost(r.Host) {
		writeError(rec, http.StatusForbidden, "host not allowed")
		return
	}
	origin, ok := s.checkOrigin(r)
	if !ok {
		writeError(rec, http.StatusForbidden, "origin not allowed")
		return
	}
	if origin != "" {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Add("Vary", "Origin")
	}
	rt := s.routes[r.URL.Path]
	if rt == nil {
		writeError(rec, http.StatusNotFound, "not found")
		return
	}
	name = r.URL.Path
	if r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != "" {
		s.preflight(rec, r, rt)
		return
	}
	h := rt.handler(r.Method)
	if h == nil {
		w.Header().Set("Allow", rt.allow())
		writeError(rec, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if rt.auth && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeError(rec, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	if r.ContentLength != 0 && !s.readBody(rec, r) {
		return
	}
	h(rec, r)
}

// readBody enforces the body rules and replaces r.Body with the bytes read, so handlers
// see at most MaxBodyBytes. It writes the error and returns false when the body is refused.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) bool {
	if !isJSON(r.Header.Get("Content-Type")) {
		writeError(w, http.StatusUnsupportedMediaType, "content type must be application/json")
		return false
	}
	if r.ContentLength > MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		} else {
			writeError(w, http.StatusBadRequest, "read request body failed")
		}
		return false
	}
	r.Body = io.NopCloser(strings.NewReader(string(b)))
	r.ContentLength = int64(len(b))
	return true
}

// preflight answers a CORS preflight from an allowed origin. Browsers send no credentials in
// a preflight, so it is not authenticated; the real request still is.
func (s *Server) preflight(w http.ResponseWriter, r *http.Request, rt *route) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", rt.allow())
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", "600")
	// Chrome's Private Network Access asks before a public page may call a loopback address.
	if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
		h.Set("Access-Control-Allow-Private-Network", "true")
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) logRequest(method, route string, status int, d time.Duration) {
	if status == 0 {
		status = http.StatusOK // a handler that wrote nothing
	}
	level := zap.DebugLevel
	switch {
	case status >= 500:
		level = zap.ErrorLevel
	case status >= 400:
		level = zap.InfoLevel
	}
	s.log.Log(level, "control request", zap.String("method", method), zap.String("route", route),
		zap.Int("status", status), zap.Duration("duration", d))
}

func setCommonHeaders(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
}

// writeJSON writes v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode response failed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeError writes {"error": msg}. msg is a fixed string, or one that names what was wrong
// with the client's own request; never a secret.
func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// recorder remembers the status for the log line and whether a response was started, so a
// panic can still be answered with a 500 when nothing was written yet.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote && code >= 200 {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
