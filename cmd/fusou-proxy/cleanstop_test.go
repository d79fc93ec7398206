package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// A clean stop leaves no temp file behind: only the outbox's entries.
func TestCleanStopLeavesNoStaleFiles(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	in := startInstance(t, game, api, "")
	in.cli(sessionJSON(api.NewSession()), "session", "set")
	c := in.client()
	pngs := game.pngAssets()
	for p, want := range pngs {
		fetch(t, c, "https://"+gameHost+p, want)
	}
	waitFor(t, "the uploads", func() bool { return api.Uploads() == len(pngs) })
	in.stop()

	var stale []string
	filepath.Walk(in.data, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(in.data, path)
		if strings.Contains(fi.Name(), ".tmp-") {
			stale = append(stale, rel)
		}
		return nil
	})
	if len(stale) > 0 {
		t.Errorf("a clean stop left %v", stale)
	}
}
