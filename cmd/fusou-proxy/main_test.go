package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// binary is the fusou-proxy built once for the tests that run it as a user would.
var binary string

func TestMain(m *testing.M) {
	if err := setUpConsole(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Under wine there is no Go toolchain: go-test-windows prebuilds the binary into GTW_BIN_DIR.
	if dir := os.Getenv("GTW_BIN_DIR"); dir != "" {
		binary = filepath.Join(dir, "fusou-proxy.exe")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "fusou-proxy-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "fusou-proxy")
	if runtime.GOOS == "windows" {
		binary += ".exe"
	}
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build fusou-proxy: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// userEnv is a clean environment for a new user whose home is home: no FUSOU_* variables,
// the OS config dir inside home (see configDir), and the OS keychain left alone (a test must
// not write a session into the keychain of the machine it runs on; sessionKeeper has its own
// tests).
func userEnv(home string, extra ...string) []string {
	own := map[string]string{ // upper-cased: Windows's names ignore case
		"HOME":            home,
		"XDG_CONFIG_HOME": filepath.Join(home, ".config"),
		"USERPROFILE":     home,
		"APPDATA":         filepath.Join(home, "AppData", "Roaming"),
		"LOCALAPPDATA":    filepath.Join(home, "AppData", "Local"),
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := own[strings.ToUpper(k)]; !ok && !strings.HasPrefix(strings.ToUpper(k), "FUSOU_") {
			env = append(env, kv)
		}
	}
	for k, v := range own {
		env = append(env, k+"="+v)
	}
	env = append(env, "FUSOU_APP_AUTH_REMEMBER_SESSION=false")
	return append(env, extra...)
}

// configDir is os.UserConfigDir() for a user whose home is home, as userEnv sets it up.
func configDir(t *testing.T, home string) string {
	t.Helper()
	switch runtime.GOOS {
	case "windows":
		return filepath.Join(home, "AppData", "Roaming")
	case "darwin":
		return filepath.Join(home, "Library", "Application Support")
	case "ios", "plan9":
		t.Skip("no HOME-based config dir on", runtime.GOOS)
	}
	return filepath.Join(home, ".config")
}

// command runs the binary in an empty working directory (so no ./configs.toml is found).
func command(t *testing.T, home string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = userEnv(home, env...)
	prepareChild(cmd)
	return cmd
}

// startRun starts `fusou-proxy run` and waits for its start-up log line.
func startRun(t *testing.T, cmd *exec.Cmd) (lines *syncBuffer, wait func() error) {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines = &syncBuffer{}
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			lines.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "fusou-proxy started") {
				once = true
				close(started)
			}
		}
		if !once {
			close(started)
		}
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("fusou-proxy run did not log its start within 30 s")
	}
	return lines, func() error { <-done; return cmd.Wait() }
}

// With no configuration, `run` starts in the OS's config dir and stops cleanly, exit 0, on each
// of the platform's stop events (SIGTERM and Ctrl-C; Ctrl-Break on Windows).
func TestRunWithNoConfigStartsAndStopsCleanly(t *testing.T) {
	for name, stop := range stopEvents {
		t.Run(name, func(t *testing.T) { testRunWithNoConfig(t, stop) })
	}
}

func testRunWithNoConfig(t *testing.T, stop func(*os.Process) error) {
	home := t.TempDir()
	cmd := command(t, home, []string{"FUSOU_PROXY_LISTEN=127.0.0.1:0", "FUSOU_CONTROL_LISTEN=127.0.0.1:0"}, "run", "--log-format", "json")
	out, wait := startRun(t, cmd)
	if err := stop(cmd.Process); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("exit after the stop event: %v\n%s", err, out)
	}
	dataDir := filepath.Join(configDir(t, home), "fusou-proxy")
	jsonDir, _ := json.Marshal(dataDir)
	for _, want := range []string{`"data_dir":` + string(jsonDir), `"proxy_listen":"127.0.0.1:`, `"control_listen":"127.0.0.1:`, "fusou-proxy stopped"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	fi, err := os.Stat(dataDir)
	if err != nil || !fi.IsDir() {
		t.Fatalf("data dir %s: %v", dataDir, err)
	}
	tok, err := os.Stat(filepath.Join(dataDir, "control.token"))
	if err != nil {
		t.Errorf("control.token: %v", err)
	}
	if runtime.GOOS != "windows" { // no mode bits; internal/datadir tests the Windows ACL
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("data dir %s: mode %v, want 0700", dataDir, fi.Mode())
		}
		if err == nil && tok.Mode().Perm() != 0o600 {
			t.Errorf("control.token: mode %v, want 0600", tok.Mode())
		}
	}
	// The first run, which made the CA, says what is left to do, with this OS's steps; later
	// runs do not.
	for _, want := range []string{"Next steps", "fusou-proxy ca export", "/proxy.pac", "session set", dataDir, strings.Split(nextStepHints(runtime.GOOS).proxy, "%s")[0]} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the first run's output lacks %q:\n%s", want, out)
		}
	}
	cmd = command(t, home, []string{"FUSOU_PROXY_LISTEN=127.0.0.1:0", "FUSOU_CONTROL_LISTEN=127.0.0.1:0"}, "run", "--log-format", "json")
	out, wait = startRun(t, cmd)
	if err := stop(cmd.Process); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	if strings.Contains(out.String(), "Next steps") {
		t.Errorf("a later run repeats the next steps:\n%s", out)
	}
}

func TestBadConfigExitsTwoWithOneLine(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		file string
		key  string
	}{
		{"env", []string{"FUSOU_APP_ASSET_SYNC_RETRY_MAX_ATTEMPTS=0"}, "", "app.asset_sync.retry.max_attempts"},
		{"file", nil, "[proxy]\nlisten = \"nope\"\n", "proxy.listen"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"run", "--data-dir", t.TempDir()}
			if c.file != "" {
				p := filepath.Join(t.TempDir(), "configs.toml")
				if err := os.WriteFile(p, []byte(c.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", p)
			}
			cmd := command(t, t.TempDir(), c.env, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit code %d (%v), want 2; stderr:\n%s", code, err, stderr.String())
			}
			msg := strings.TrimSpace(stderr.String())
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, c.key) {
				t.Errorf("stderr must be one line naming %s, got:\n%s", c.key, msg)
			}
		})
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"run", "--no-such-flag"}, {"version", "extra"}, {"run", "--log-level", "loud"}} {
		cmd := command(t, t.TempDir(), nil, append(args, "--data-dir", t.TempDir())...)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		_ = cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("%q: exit code %d, want 2", args, code)
		}
	}
}

// Secrets never reach the logs or `config show`: a configured control token, and the
// generated one in control.token.
func TestSecretsAreNotLogged(t *testing.T) {
	const secret = "s3cr3t-control-token-abcdef"
	home := t.TempDir()
	data := t.TempDir()
	env := []string{"FUSOU_CONTROL_TOKEN=" + secret, "FUSOU_PROXY_LISTEN=127.0.0.1:0", "FUSOU_CONTROL_LISTEN=127.0.0.1:0"}

	show := command(t, home, env, "config", "show", "--data-dir", data)
	out, err := show.CombinedOutput()
	if err != nil {
		t.Fatalf("config show: %v\n%s", err, out)
	}
	if strings.Contains(string(out), secret) || !strings.Contains(string(out), "<redacted>") {
		t.Errorf("config show must redact control.token:\n%s", out)
	}

	for _, e := range [][]string{env, env[1:]} { // configured token, then a generated one
		cmd := command(t, home, e, "run", "--data-dir", data, "--log-level", "debug", "--log-format", "json")
		logs, wait := startRun(t, cmd)
		if err := interrupt(cmd.Process); err != nil {
			t.Fatal(err)
		}
		if err := wait(); err != nil {
			t.Fatalf("run: %v\n%s", err, logs)
		}
		secrets := []string{secret}
		if b, err := os.ReadFile(filepath.Join(data, "control.token")); err == nil {
			secrets = append(secrets, strings.TrimSpace(string(b)))
		}
		for _, s := range secrets {
			if strings.Contains(logs.String(), s) {
				t.Errorf("a secret reached the log:\n%s", logs)
			}
		}
	}
}

func TestVersionAndConfigShow(t *testing.T) {
	out, err := command(t, t.TempDir(), nil, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "fusou-proxy ") {
		t.Errorf("version = %q, %v", out, err)
	}
	out, err = command(t, t.TempDir(), nil, "config", "show", "--data-dir", t.TempDir()).Output()
	if err != nil || !strings.Contains(string(out), "[app.asset_sync.retry]\nmax_attempts = 5") {
		t.Errorf("config show = %q, %v", out, err)
	}
}

// syncBuffer is a bytes.Buffer safe to read while the log reader goroutine writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
