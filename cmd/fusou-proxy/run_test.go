package main

import (
	"strings"
	"testing"
)

// The first run's next steps name each OS's own settings, and only its own.
func TestNextStepsPerOS(t *testing.T) {
	const pac = "http://127.0.0.1:8051/proxy.pac"
	want := map[string][]string{
		"windows": {`Network & internet → Proxy → "Use setup script", script address ` + pac, "Windows user's trusted roots"},
		"darwin":  {`Proxies → "Automatic proxy configuration", URL ` + pac, "login keychain"},
		"linux":   {"--proxy-pac-url=" + pac, "libnss3-tools"},
	}
	for goos, words := range want {
		text := nextSteps(goos, "DATADIR", "127.0.0.1:8051", "127.0.0.1:8050")
		for _, w := range append(words, "DATADIR", "127.0.0.1:8050", "fusou-proxy ca install") {
			if !strings.Contains(text, w) {
				t.Errorf("%s: next steps lack %q:\n%s", goos, w, text)
			}
		}
		for other, ws := range want {
			if other != goos && strings.Contains(text, ws[0]) {
				t.Errorf("%s: next steps give %s's proxy setting:\n%s", goos, other, text)
			}
		}
	}
	for goos, dir := range map[string]string{"windows": `%APPDATA%\fusou-proxy`, "darwin": "~/Library/Application Support/fusou-proxy", "linux": "~/.config/fusou-proxy"} {
		if got := nextStepHints(goos).dataDir; !strings.HasPrefix(got, dir) {
			t.Errorf("%s: default data dir shown as %q, want %q", goos, got, dir)
		}
	}
}
