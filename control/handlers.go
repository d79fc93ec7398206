package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// maxUnixSeconds is 9999-12-31T23:59:59Z: a larger expires_at is almost surely milliseconds.
const maxUnixSeconds = 253402300799

func (s *Server) buildRoutes() map[string]*route {
	routes := map[string]*route{
		"/healthz":   {handlers: map[string]http.HandlerFunc{http.MethodGet: s.healthz}},
		"/v1/status": {auth: true, handlers: map[string]http.HandlerFunc{http.MethodGet: s.status}},
	}
	if s.o.Session != nil {
		routes["/v1/session"] = &route{auth: true, handlers: map[string]http.HandlerFunc{
			http.MethodPost:   s.postSession,
			http.MethodDelete: s.deleteSession,
		}}
	}
	if s.o.Retry != nil {
		routes["/v1/retry"] = &route{auth: true, handlers: map[string]http.HandlerFunc{http.MethodPost: s.retry}}
	}
	if s.o.Pending != nil {
		routes["/v1/pending"] = &route{auth: true, handlers: map[string]http.HandlerFunc{http.MethodGet: s.pending}}
	}
	if s.o.Metrics != nil {
		routes["/metrics"] = &route{auth: true, handlers: map[string]http.HandlerFunc{http.MethodGet: s.o.Metrics.ServeHTTP}}
	}
	if s.o.CAPEM != nil {
		routes["/ca.pem"] = &route{handlers: map[string]http.HandlerFunc{http.MethodGet: s.caPEM}}
	}
	if s.pac != nil {
		routes["/proxy.pac"] = &route{handlers: map[string]http.HandlerFunc{http.MethodGet: s.proxyPAC}}
	}
	return routes
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok")
}

// sessionBody is the POST /v1/session document; a missing or null token decodes as "".
type sessionBody struct {
	AccessToken  string          `json:"access_token"`
	RefreshToken string          `json:"refresh_token"`
	ExpiresAt    json.RawMessage `json:"expires_at"`
	DatasetToken string          `json:"dataset_token"`
	AutoRefresh  bool            `json:"auto_refresh"`
}

func (s *Server) postSession(w http.ResponseWriter, r *http.Request) {
	var body sessionBody
	if err := decodeObject(r.Body, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	expires, err := parseExpiresAt(body.ExpiresAt)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !expires.IsZero() && !expires.After(time.Now()) {
		writeError(w, http.StatusBadRequest, "expires_at is in the past: the access token has expired; post a fresh session")
		return
	}
	if body.DatasetToken != "" && !usableToken(body.DatasetToken) {
		writeError(w, http.StatusBadRequest, "dataset_token must be printable ASCII without spaces")
		return
	}
	// SPEC §8: a session without both tokens clears the old one, so a sign-out in the app
	// that posts empty tokens really stops uploads under the previous user.
	if !usableToken(body.AccessToken) || !usableToken(body.RefreshToken) {
		s.o.Session.ClearSession()
		s.log.Info("session cleared: the posted session lacks a usable access_token or refresh_token")
		writeError(w, http.StatusBadRequest, "access_token and refresh_token are required (printable ASCII without spaces); session cleared")
		return
	}
	s.o.Session.SetSession(Session{
		AccessToken:  body.AccessToken,
		RefreshToken: body.RefreshToken,
		DatasetToken: body.DatasetToken,
		ExpiresAt:    expires,
		AutoRefresh:  body.AutoRefresh,
	})
	started := false
	if s.o.Retry != nil {
		started, _ = s.o.Retry.Trigger(ReasonSession, false)
	}
	s.log.Info("session set", zap.Bool("expiry_known", !expires.IsZero()),
		zap.Bool("dataset_token", body.DatasetToken != ""), zap.Bool("auto_refresh", body.AutoRefresh),
		zap.Bool("retry_started", started))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteSession(w http.ResponseWriter, _ *http.Request) {
	s.o.Session.ClearSession()
	s.log.Info("session cleared")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		if err := decodeObject(r.Body, &struct{}{}); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	started, pass := s.o.Retry.Trigger(ReasonManual, true)
	writeJSON(w, http.StatusAccepted, struct {
		Started bool   `json:"started"`
		Pass    uint64 `json:"pass"`
	}{started, pass})
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	doc, err := s.sourceStatus()
	if err != nil {
		s.log.Error("encode status", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "encode status failed")
		return
	}
	var st SessionInfo
	if s.o.Session != nil {
		st = s.o.Session.SessionState()
	}
	doc["version"] = s.o.Version
	doc["uptime_seconds"] = max(0, int64(time.Since(s.o.Started)/time.Second))
	doc["session"] = st
	writeJSON(w, http.StatusOK, doc)
}

// sourceStatus returns the StatusSource's document as a map of its top-level fields.
func (s *Server) sourceStatus() (map[string]any, error) {
	doc := map[string]any{}
	if s.o.Status == nil {
		return doc, nil
	}
	b, err := json.Marshal(s.o.Status.Status())
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage // null leaves it nil; anything but an object fails
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("status is not a JSON object: %w", err)
	}
	for k, v := range fields {
		doc[k] = v
	}
	return doc, nil
}

func (s *Server) pending(w http.ResponseWriter, _ *http.Request) {
	items, err := s.o.Pending.Pending()
	if err != nil {
		s.log.Error("list pending entries", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "list pending entries failed")
		return
	}
	if items == nil {
		items = []PendingItem{}
	}
	writeJSON(w, http.StatusOK, map[string][]PendingItem{"entries": items})
}

func (s *Server) caPEM(w http.ResponseWriter, _ *http.Request) {
	pem, err := s.o.CAPEM()
	if err != nil {
		s.log.Error("read CA certificate", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "read CA certificate failed")
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Content-Disposition", `attachment; filename="fusou-ca.pem"`)
	_, _ = w.Write(pem)
}

func (s *Server) proxyPAC(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-ns-proxy-autoconfig")
	_, _ = w.Write(s.pac)
}

// decodeObject decodes exactly one JSON object into v, refusing unknown fields and
// trailing data.
func decodeObject(r io.Reader, v any) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return errors.New("read request body failed")
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 {
		return errors.New("request body is empty")
	} else if t[0] != '{' {
		return errors.New("invalid JSON body: want an object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("invalid JSON body: data after the object")
	}
	return nil
}

// parseExpiresAt reads expires_at: absent or null, an RFC 3339 string, or Unix seconds.
func parseExpiresAt(raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return time.Time{}, nil
	}
	var str string
	if json.Unmarshal(raw, &str) == nil {
		t, err := time.Parse(time.RFC3339, str)
		if err != nil {
			return time.Time{}, errors.New("expires_at must be an RFC 3339 time or Unix seconds")
		}
		return t, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || n < 1 || n > maxUnixSeconds {
		return time.Time{}, errors.New("expires_at must be an RFC 3339 time or Unix seconds (an integer, not milliseconds)")
	}
	return time.Unix(n, 0).UTC(), nil
}
