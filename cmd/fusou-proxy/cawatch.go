package main

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/certs"
)

// caPollEvery is how often the running proxy looks for a CA rotated beside it. A stat every
// few seconds costs nothing and works alike on every OS, unlike change notifications.
const caPollEvery = 2 * time.Second

// watchCA reloads the CA when `fusou-proxy ca rotate` replaces its file, so that /ca.pem and the
// leaves the proxy makes are the new CA's without a restart (SPEC §9).
func (a *app) watchCA(ctx context.Context, every time.Duration) {
	path := filepath.Join(a.ca.Dir(), certs.CertFile)
	last := stamp(path)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := stamp(path)
		if now == last {
			continue
		}
		last = now
		if _, err := a.ca.Reload(); err != nil {
			a.log.Warn("The CA file changed but could not be loaded; still using the CA in memory", zap.Error(err))
		}
	}
}

// fileStamp tells a replaced file from the one before it.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.ModTime(), fi.Size()}
}
