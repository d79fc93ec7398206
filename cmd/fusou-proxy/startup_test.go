package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every start-up failure is one clear line on stderr (besides the JSON log lines) and exit 1,
// or 2 for a configuration error; never a panic (SPEC §11).
func TestStartupFailuresAreOneLine(t *testing.T) {
	listenEnv := []string{"FUSOU_PROXY_LISTEN=127.0.0.1:0", "FUSOU_CONTROL_LISTEN=127.0.0.1:0"}

	// A running instance, for the second-run case.
	busy := t.TempDir()
	first := command(t, t.TempDir(), listenEnv, "run", "--log-format", "json", "--data-dir", busy)
	_, wait := startRun(t, first)
	defer func() { interrupt(first.Process); wait() }()

	// A data dir made with other mitm_hosts: its CA does not cover the default.
	otherCA := t.TempDir()
	writeFile(t, filepath.Join(otherCA, "other.toml"), "[proxy]\nmitm_hosts = [\"example.com\"]\n")
	if out, err := command(t, t.TempDir(), nil, "ca", "export", "--data-dir", otherCA, "--config", filepath.Join(otherCA, "other.toml")).CombinedOutput(); err != nil {
		t.Fatalf("ca export: %v\n%s", err, out)
	}
	notADir := filepath.Join(t.TempDir(), "file")
	writeFile(t, notADir, "x")

	cases := []struct {
		name  string
		toml  string // a config file's content, "" for none
		dir   string // --data-dir, "" for a fresh one
		code  int
		words string // the line must hold these
	}{
		{"TOML syntax", "[proxy]\nmitm_hosts = [\"a.com\"\nlisten = 1\n", "", 2, "configs.toml:3"},
		{"public suffix", "[proxy]\nmitm_hosts = [\"com\"]\n", "", 2, "proxy.mitm_hosts"},
		{"empty domain", "[proxy]\nmitm_hosts = [\"\"]\n", "", 2, "proxy.mitm_hosts"},
		{"second run on one data dir", "", busy, 1, fmt.Sprintf("pid %d", first.Process.Pid)},
		{"CA does not cover mitm_hosts", "", otherCA, 1, "ca rotate"},
		{"data dir cannot be made", "", filepath.Join(notADir, "sub"), 1, "data dir"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"run", "--log-format", "json", "--data-dir", c.dir}
			if c.dir == "" {
				args[len(args)-1] = t.TempDir()
			}
			if c.toml != "" {
				p := filepath.Join(t.TempDir(), "configs.toml")
				writeFile(t, p, c.toml)
				args = append(args, "--config", p)
			}
			cmd := command(t, t.TempDir(), listenEnv, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			_ = cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != c.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, c.code, stderr.String())
			}
			var plain []string
			for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				if !strings.HasPrefix(l, "{") {
					plain = append(plain, l)
				}
			}
			if len(plain) != 1 || !strings.HasPrefix(plain[0], "fusou-proxy: ") || !strings.Contains(plain[0], c.words) {
				t.Errorf("want one line naming %q, got:\n%s", c.words, stderr.String())
			}
			if s := stderr.String(); strings.Contains(s, "panic:") || strings.Contains(s, "goroutine ") {
				t.Errorf("a panic reached the user:\n%s", s)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
