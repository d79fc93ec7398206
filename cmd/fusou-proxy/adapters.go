package main

import (
	"context"
	"net/http"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets"
	"github.com/fusou-proxy/fusou-proxy/control"
	"github.com/fusou-proxy/fusou-proxy/pending"
	"github.com/fusou-proxy/fusou-proxy/proxy"
	"github.com/fusou-proxy/fusou-proxy/retry"
)

// The small adapters between the packages' interfaces: each package defines what it needs,
// and only main knows who provides it.

// captureSink hands the proxy's captures to the asset pipeline.
type captureSink struct{ p *assets.Pipeline }

func (s captureSink) Start(req *http.Request, resp *http.Response) proxy.Spool {
	if c := s.p.Start(req, resp); c != nil {
		return c
	}
	return nil // a nil *assets.Capture must not become a non-nil interface
}

// deliverFunc is the retry service's upload path: the pipeline's Deliver.
func deliverFunc(p *assets.Pipeline) retry.DeliverFunc {
	return func(ctx context.Context, e pending.Entry, count bool) (retry.Outcome, string) {
		d := p.Deliver(ctx, e, count)
		return d.Outcome(), d.Reason
	}
}

// sessionControl puts a posted session into the holder the uploader reads, and refreshes
// the remote index for it (the retry pass is triggered by the control endpoint).
type sessionControl struct{ a *app }

func (s sessionControl) SetSession(in control.Session) {
	s.a.session.Set(assets.Session{AccessToken: in.AccessToken, RefreshToken: in.RefreshToken,
		DatasetToken: in.DatasetToken, ExpiresAt: in.ExpiresAt, AutoRefresh: in.AutoRefresh})
	if auth := s.a.cfg.App.Auth; in.AutoRefresh && (auth.SupabaseURL == "" || auth.SupabaseAnonKey == "") {
		s.a.log.Warn("The session is the proxy's to refresh, but app.auth.supabase_url or app.auth.supabase_anon_key is not set: it will stop working when its access token expires")
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.a.index.Refresh(ctx, true); err != nil {
			logIndexFailure(s.a.log, err)
		}
	}()
}

func (s sessionControl) ClearSession() { s.a.session.Clear() }

func (s sessionControl) SessionState() control.SessionInfo {
	sess, ok := s.a.session.Get()
	if !ok {
		return control.SessionInfo{}
	}
	info := control.SessionInfo{Present: true, Kind: "caller", DatasetToken: sess.DatasetToken != "",
		ExpiresAt: timeOrNil(sess.AccessExpiry()), DatasetExpiresAt: timeOrNil(sess.DatasetExpiry())}
	if sess.AutoRefresh {
		info.Kind = "proxy"
	}
	return info
}

// timeOrNil is t in UTC to the second, or nil when zero.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC().Truncate(time.Second)
	return &t
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
		"ca":      map[string]string{"rotate_advice": s.a.ca.RotationAdvice()},
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
