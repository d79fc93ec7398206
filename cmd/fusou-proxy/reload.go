package main

import (
	"errors"
	"strings"

	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/internal/config"
)

// liveKey reports whether a configuration key takes effect without a restart.
func liveKey(key string) bool {
	return strings.HasPrefix(key, "app.asset_sync.retry.") ||
		strings.HasPrefix(key, "proxy.capture.") ||
		key == "app.asset_sync.asset_extensions" ||
		key == "app.asset_sync.enable"
}

// reload applies an edited configuration file: the live keys at once, the others logged as
// needing a restart. A file that does not validate changes nothing.
func (a *app) reload(next *config.Loaded, err error) {
	if err != nil {
		var ce *config.Error
		key := ""
		if errors.As(err, &ce) {
			key = ce.Key
		}
		a.log.Error("Config reload refused; the running settings stay", zap.String("key", key), zap.Error(err))
		return
	}
	a.flags(next)
	a.cfgMu.Lock()
	defer a.cfgMu.Unlock()
	var live, restart []string
	for _, k := range config.Changed(&a.cfg.Config, &next.Config) {
		if liveKey(k) {
			live = append(live, k)
		} else {
			restart = append(restart, k)
		}
	}
	if len(live) > 0 {
		a.applyLive(next)
		a.log.Info("Config reloaded", zap.Strings("applied", live))
	}
	if len(restart) > 0 {
		a.log.Warn("Config change needs a restart to take effect", zap.Strings("keys", restart))
	}
}

// applyLive copies the live keys of next into the running parts and into a.cfg. cfgMu must
// be held.
func (a *app) applyLive(next *config.Loaded) {
	a.cfg.App.AssetSync.Retry = next.App.AssetSync.Retry
	a.cfg.Proxy.Capture = next.Proxy.Capture
	a.cfg.App.AssetSync.AssetExtensions = next.App.AssetSync.AssetExtensions
	a.cfg.App.AssetSync.Enable = next.App.AssetSync.Enable

	r := a.cfg.App.AssetSync.Retry
	a.store.SetLimits(r.MaxPendingFiles, r.MaxPendingBytes)
	a.retry.SetSettings(retrySettings(a.cfg))
	a.pipeline.SetSettings(pipelineSettings(a.cfg))
	a.proxy.SetCapture(captureRules(a.cfg))
}
