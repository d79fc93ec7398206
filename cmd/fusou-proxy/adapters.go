package main

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/assets"
	"github.com/fusou-proxy/fusou-proxy/control"
	"github.com/fusou-proxy/fusou-proxy/pending"
	"github.com/fusou-proxy/fusou-proxy/proxy"
)

// The small adapters between the packages' interfaces: each package defines what it needs,
// and only main knows who provides it.

// captureSink hands the proxy's captures to the asset pipeline.
type captureSink struct{ p *assets.Pipeline }

func (s captureSink) Start(req *http.Request, resp *http.Response) proxy.Spool {
	if sp := s.p.Start(req, resp); sp != nil {
		return sp
	}
	return nil // a nil *assets.Spool must not become a non-nil interface
}

// sessionControl puts a posted session into the holder the uploader reads, and refreshes
// the remote index for it (the retry pass is triggered by the control endpoint).
type sessionControl struct{ a *app }

func (s sessionControl) SetSession(in control.Session) {
	s.a.session.Set(assets.Session{AccessToken: in.AccessToken, RefreshToken: in.RefreshToken,
		DatasetToken: in.DatasetToken, ExpiresAt: in.ExpiresAt})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.a.index.Refresh(ctx, true); err != nil {
			s.a.log.Debug("asset index refresh failed", zap.Error(err))
		}
	}()
}

func (s sessionControl) ClearSession() { s.a.session.Clear() }

func (s sessionControl) SessionState() (bool, time.Time) {
	sess, ok := s.a.session.Get()
	return ok, sess.ExpiresAt
}

// statusSource is GET /v1/status's document (no secrets: counts and times only).
type statusSource struct{ a *app }

func (s statusSource) Status() any {
	st := s.a.store.Stats()
	pend := map[string]any{"count": st.Count, "bytes": st.Bytes, "oldest": ""}
	if !st.Oldest.IsZero() {
		pend["oldest"] = st.Oldest.UTC().Format(time.RFC3339)
	}
	return map[string]any{
		"pending": pend,
		"retry":   s.a.retry.Status(),
		"sync":    s.a.pipeline.Stats(),
		"proxy":   s.a.proxy.Stats(),
		"certs":   s.a.ca.Stats(),
	}
}

// pendingSource lists the store for GET /v1/pending.
type pendingSource struct{ st *pending.Store }

func (p pendingSource) Pending() ([]control.PendingItem, error) {
	list := p.st.List()
	out := make([]control.PendingItem, 0, len(list))
	for _, e := range list {
		out = append(out, control.PendingItem{ID: e.ID, Key: e.Context.Key, Size: e.Context.FileSize,
			CreatedAt: e.CreatedAt, AttemptCount: e.AttemptCount, LastError: e.LastError})
	}
	return out, nil
}
