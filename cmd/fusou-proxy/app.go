package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/assets"
	"github.com/fusou-proxy/fusou-proxy/certs"
	"github.com/fusou-proxy/fusou-proxy/control"
	"github.com/fusou-proxy/fusou-proxy/internal/config"
	"github.com/fusou-proxy/fusou-proxy/internal/connlimit"
	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
	"github.com/fusou-proxy/fusou-proxy/pending"
	"github.com/fusou-proxy/fusou-proxy/proxy"
	"github.com/fusou-proxy/fusou-proxy/retry"
)

// indexRefreshTick is how often the remote index is asked to refresh; the index itself
// refreshes at most every assets.DefaultIndexMinInterval.
const indexRefreshTick = time.Minute

// shutdownGrace bounds how long in-flight client requests get at shutdown.
const shutdownGrace = 5 * time.Second

// app is one running fusou-proxy: every part, wired.
type app struct {
	src     config.Sources
	cfgMu   sync.Mutex     // guards cfg's live keys during a reload
	cfg     *config.Loaded // the effective configuration, flags applied
	flags   func(*config.Loaded)
	log     *zap.Logger
	started time.Time

	ca       *certs.Authority
	store    *pending.Store
	session  *assets.SessionHolder
	index    *assets.Index
	pipeline *assets.Pipeline
	retry    *retry.Service
	proxy    *proxy.Proxy
	control  *control.Server
	metrics  *metrics

	proxyLn, controlLn net.Listener
}

// newApp builds every part from the configuration; nothing listens or runs yet. On error
// what was opened is closed.
// src and flags say how cfg was made, so that an edited file is read the same way.
func newApp(src config.Sources, cfg *config.Loaded, flags func(*config.Loaded), log *zap.Logger, token string) (_ *app, err error) {
	// a is not the named result: a failing return sets that to nil before the deferred close.
	a := &app{src: src, cfg: cfg, flags: flags, log: log, started: time.Now(), session: &assets.SessionHolder{}}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	dir := cfg.DataDir
	if a.ca, err = certs.Open(certs.Options{Dir: filepath.Join(dir, datadir.CADir), Hosts: cfg.Proxy.MITMHosts, Logger: log.Named("certs")}); err != nil {
		return nil, err
	}
	if advice := a.ca.RotationAdvice(); advice != "" {
		log.Warn("CA: " + advice)
	}
	a.store, err = openPendingStore(cfg, false, log.Named("pending"))
	if errors.Is(err, pending.ErrLocked) {
		return nil, fmt.Errorf("%w: is another fusou-proxy running with data dir %s?", err, dir)
	}
	if err != nil {
		return nil, err
	}
	removeOldSpool(dir, log) // under the store's lock: no other instance uses this data dir
	a.setUpSession(cfg)
	as := cfg.App.AssetSync
	uploader, err := assets.NewUploader(assets.UploaderOptions{
		Endpoint: as.AssetUploadEndpoint, Session: a.session,
		ConnectTimeout: as.ConnectTimeout(), RequestTimeout: as.RequestTimeout(), Logger: log.Named("upload"),
	})
	if err != nil {
		return nil, err
	}
	if a.index, err = assets.OpenIndex(assets.IndexOptions{
		Endpoint: as.AssetExistingKeysEndpoint, Path: filepath.Join(dir, datadir.IndexFile),
		Session: a.session, Logger: log.Named("index"),
		ConnectTimeout: as.ConnectTimeout(), RequestTimeout: as.RequestTimeout(),
	}); err != nil {
		return nil, err
	}
	if a.pipeline, err = assets.NewPipeline(assets.PipelineOptions{
		Store: a.store, Uploader: uploader, Index: a.index, Session: a.session,
		Endpoint: as.AssetUploadEndpoint, Workers: as.Workers, QueueSize: as.QueueSize,
		MaxAssetBytes: cfg.Proxy.Capture.MaxAssetBytes,
		Settings:      pipelineSettings(cfg), Logger: log.Named("assets"),
	}); err != nil {
		return nil, err
	}
	a.metrics = newMetrics()
	a.retry = retry.New(retry.Options{
		Store: a.store, Deliver: deliverFunc(a.pipeline),
		HasSession: func() bool { _, ok := a.session.Get(); return ok },
		Settings:   retrySettings(cfg), OnPass: a.metrics.observePass, Logger: log.Named("retry"),
	})
	if a.proxy, err = newProxy(cfg, a.ca, a.pipeline, log.Named("proxy")); err != nil {
		return nil, err
	}
	a.metrics.register(a)
	if a.control, err = control.New(control.Options{
		Token: token, AllowedOrigins: cfg.Control.AllowedOrigins,
		Session: sessionControl{a}, Retry: a.retry, Status: statusSource{a}, Pending: pendingSource{a.store},
		Metrics: a.metrics.handler(), CAPEM: func() ([]byte, error) { return a.ca.PEM(), nil },
		ProxyAddr: cfg.Proxy.Listen, MITMHosts: cfg.Proxy.MITMHosts,
		Version: version, Started: a.started, Logger: log.Named("control"),
	}); err != nil {
		return nil, err
	}
	return a, nil
}

func newProxy(cfg *config.Loaded, ca *certs.Authority, p *assets.Pipeline, log *zap.Logger) (*proxy.Proxy, error) {
	var rules []proxy.DialRule
	for _, s := range cfg.Proxy.ConnectTo {
		r, err := proxy.ParseDialRule(s)
		if err != nil {
			return nil, &config.Error{Key: "proxy.connect_to", Msg: err.Error()}
		}
		rules = append(rules, r)
	}
	var roots *x509.CertPool
	if f := cfg.Proxy.UpstreamCAFile; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, &config.Error{Key: "proxy.upstream_ca_file", Msg: err.Error()}
		}
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, &config.Error{Key: "proxy.upstream_ca_file", Msg: "no PEM certificate in " + f}
		}
	}
	return proxy.New(proxy.Options{
		MITMHosts: cfg.Proxy.MITMHosts, DialRules: rules, UpstreamRoots: roots, Certs: ca,
		Sink: captureSink{p}, Capture: captureRules(cfg), Logger: log,
	})
}

// listen opens both listeners, so that a busy port fails start-up before anything runs.
func (a *app) listen() error {
	var err error
	if a.proxyLn, err = net.Listen("tcp", a.cfg.Proxy.Listen); err != nil {
		return fmt.Errorf("listen on proxy.listen: %w", err)
	}
	if a.controlLn, err = control.Listen(a.cfg.Control.Listen, a.cfg.Control.AllowRemote); err != nil {
		return err
	}
	return nil
}

// serve runs everything until ctx ends, then shuts down in order: stop taking traffic, then
// commit what was captured, cancel uploads (their entries stay pending), close the store.
func (a *app) serve(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.pipeline.Run(runCtx)
	a.retry.Start(runCtx)
	go a.refreshIndex(runCtx)
	go a.summarize(runCtx, summaryEvery)
	go a.watchCA(runCtx, caPollEvery)
	if err := config.Watch(runCtx, a.src, a.cfg, a.reload); err != nil {
		a.log.Warn("config file changes will need a restart", zap.Error(err))
	}

	proxySrv, proxyLn := a.proxyServer()
	errc := make(chan error, 2)
	go func() { errc <- proxySrv.Serve(proxyLn) }()
	controlCtx, stopControl := context.WithCancel(context.Background())
	defer stopControl()
	go func() { errc <- a.control.Serve(controlCtx, a.controlLn) }()

	a.log.Info("fusou-proxy started",
		zap.String("version", version),
		zap.String("data_dir", a.cfg.DataDir),
		zap.String("config_file", a.cfg.File),
		zap.String("proxy_listen", a.proxyLn.Addr().String()),
		zap.String("control_listen", a.controlLn.Addr().String()),
		zap.String("pac_url", "http://"+a.controlLn.Addr().String()+"/proxy.pac"),
		zap.Int("pending", a.store.Stats().Count),
	)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("serve: %w", err)
		}
	}
	a.log.Info("fusou-proxy stopping")
	shutCtx, done := context.WithTimeout(context.Background(), shutdownGrace)
	defer done()
	if err := proxySrv.Shutdown(shutCtx); err != nil {
		proxySrv.Close() // hijacked tunnels and slow clients: cut them
	}
	stopControl()
	cancel()
	a.retry.Stop()
	if err := a.pipeline.Close(); err != nil {
		a.log.Warn("pipeline shutdown", zap.Error(err))
	}
	a.close()
	a.log.Info("fusou-proxy stopped", zap.Duration("uptime", time.Since(a.started)))
	return runErr
}

// proxyServer is the proxy's http.Server and its listener, which caps and times out client
// connections (SPEC §11). The cap is proxy.max_conns, lowered to fit the file-descriptor limit.
func (a *app) proxyServer() (*http.Server, net.Listener) {
	want := a.cfg.Proxy.MaxConns
	maxConns, fdLimit := connlimit.EffectiveMax(want)
	a.log.Info("Proxy connection cap", zap.Int("max_conns", maxConns), zap.Int("configured", want),
		zap.Uint64("fd_limit", fdLimit), zap.Bool("lowered", maxConns < want))
	ln := connlimit.NewListener(a.proxyLn, connlimit.Options{Max: maxConns, Logger: a.log.Named("proxy.conns")})
	srv := &http.Server{Handler: a.proxy, ErrorLog: zap.NewStdLog(a.log.Named("proxy.http"))}
	ln.Configure(srv)
	return srv, ln
}

// close releases what newApp opened.
func (a *app) close() {
	if a.index != nil {
		if err := a.index.Flush(); err != nil {
			a.log.Warn("record acknowledged uploads", zap.Error(err))
		}
	}
	for _, ln := range []net.Listener{a.proxyLn, a.controlLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			a.log.Warn("close pending store", zap.Error(err))
		}
	}
}

// summaryEvery is how often a minute's activity is summed up in one INFO line.
const summaryEvery = time.Minute

// summarize logs, every period in which something happened, one INFO line with what the
// pipeline did in it, in place of a line per capture.
func (a *app) summarize(ctx context.Context, period time.Duration) {
	logActivity(ctx, period, a.pipeline.Stats, func() int { return a.store.Stats().Count }, a.log)
}

// logActivity is summarize over plain functions, so that it can be tested alone.
func logActivity(ctx context.Context, period time.Duration, stats func() assets.Stats, pending func() int, log *zap.Logger) {
	t := time.NewTicker(period)
	defer t.Stop()
	prev := stats()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := stats()
		if cur == prev {
			continue
		}
		log.Info("Activity in the last minute",
			zap.Int64("captured", cur.Captured-prev.Captured),
			zap.Int64("saved_pending", cur.Committed-prev.Committed),
			zap.Int64("uploaded", cur.Uploaded-prev.Uploaded),
			zap.Int64("waiting_for_session", cur.Auth-prev.Auth),
			zap.Int64("failed", cur.Failed-prev.Failed),
			zap.Int64("rejected", cur.Rejected-prev.Rejected),
			zap.Int64("shed", cur.Shed-prev.Shed),
			zap.Int("pending", pending()))
		prev = cur
	}
}

// logIndexFailure logs a failed refresh of the remote index: a WARN, since dedupe then rests on
// older knowledge, except for want of a usable session, which the session's own lines cover.
func logIndexFailure(log *zap.Logger, err error) {
	if assets.Classify(0, err) == assets.Auth { // no session, or its tokens expired
		log.Debug("asset index not refreshed: no usable session", zap.Error(err))
		return
	}
	log.Warn("Asset index refresh failed; uploads still dedupe against the last copy", zap.Error(err))
}

// setUpSession lets the holder refresh proxy-owned sessions through Supabase and, with
// remember_session, keep them in the OS keychain, starting with the one kept there.
func (a *app) setUpSession(cfg *config.Loaded) {
	auth := cfg.App.Auth
	sb := assets.Supabase{URL: auth.SupabaseURL, AnonKey: auth.SupabaseAnonKey,
		Client: &http.Client{Timeout: cfg.App.AssetSync.RequestTimeout()}}
	var onChange func()
	if auth.RememberSession {
		keeper := &sessionKeeper{holder: a.session, log: a.log.Named("session")}
		if s, ok := keeper.load(); ok {
			a.session.Set(s)
			a.log.Info("Restored the session kept in the OS keychain", zap.Object("session", s))
		}
		onChange = keeper.changed
	}
	a.session.SetRefresher(sb.Refresh, onChange, a.log.Named("session"))
}

// refreshIndex keeps the remote index fresh while a session exists.
func (a *app) refreshIndex(ctx context.Context) {
	t := time.NewTicker(indexRefreshTick)
	defer t.Stop()
	for {
		if _, ok := a.session.Get(); ok {
			a.session.WarnIfExpiring()
			if err := a.index.Refresh(ctx, false); err != nil && ctx.Err() == nil {
				logIndexFailure(a.log, err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func pipelineSettings(cfg *config.Loaded) assets.Settings {
	return assets.Settings{Enable: cfg.App.AssetSync.Enable, Extensions: cfg.App.AssetSync.AssetExtensions}
}

func retrySettings(cfg *config.Loaded) retry.Settings {
	r := cfg.App.AssetSync.Retry
	return retry.Settings{Interval: r.Interval(), Concurrency: r.Concurrency, TTL: r.TTL(), MaxAttempts: r.MaxAttempts}
}

func captureRules(cfg *config.Loaded) proxy.CaptureRules {
	c := cfg.Proxy.Capture
	return proxy.CaptureRules{Enable: c.Enable && cfg.App.AssetSync.Enable, PathPrefixes: c.PathPrefixes,
		SkipPathPrefixes: c.SkipPathPrefixes, MaxAssetBytes: c.MaxAssetBytes}
}
