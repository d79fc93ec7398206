package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/viper"
)

// noEnv isolates a test from the machine's FUSOU_* variables.
func noEnv(string) (string, bool) { return "", false }

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, FileName)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The repository's configs.toml must list every key with exactly the built-in default.
func TestRepositoryConfigMatchesDefaults(t *testing.T) {
	v := viper.New()
	v.SetConfigFile(filepath.Join("..", "..", FileName))
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		if !v.IsSet(k) {
			t.Errorf("configs.toml lacks key %s", k)
		}
	}
	for _, k := range v.AllKeys() {
		if !contains(Keys(), k) {
			t.Errorf("configs.toml has key %s that Config does not know", k)
		}
	}
	got, err := Load(Sources{File: filepath.Join("..", "..", FileName), DataDir: t.TempDir(), LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(got.Config, want) {
		t.Errorf("configs.toml differs from Default():\n got %+v\nwant %+v", got.Config, want)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestLoadWithoutFileUsesDefaults(t *testing.T) {
	data := t.TempDir()
	got, err := Load(Sources{DataDir: data, WorkDir: t.TempDir(), LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if got.File != "" {
		t.Errorf("File = %q, want none", got.File)
	}
	if got.DataDir != data {
		t.Errorf("DataDir = %q, want %q", got.DataDir, data)
	}
	if !reflect.DeepEqual(got.Config, Default()) {
		t.Errorf("config differs from defaults: %+v", got.Config)
	}
}

func TestSearchOrder(t *testing.T) {
	work, data, explicit := t.TempDir(), t.TempDir(), t.TempDir()
	writeFile(t, data, "[proxy]\nlisten = \"127.0.0.1:1003\"\n")
	load := func(src Sources) string {
		t.Helper()
		src.LookupEnv, src.DataDir, src.WorkDir = noEnv, data, work
		got, err := Load(src)
		if err != nil {
			t.Fatal(err)
		}
		return got.Proxy.Listen
	}
	if got := load(Sources{}); got != "127.0.0.1:1003" {
		t.Errorf("data dir file: listen = %s", got)
	}
	writeFile(t, work, "[proxy]\nlisten = \"127.0.0.1:1002\"\n")
	if got := load(Sources{}); got != "127.0.0.1:1002" {
		t.Errorf("./configs.toml should win over the data dir's: listen = %s", got)
	}
	p := writeFile(t, explicit, "[proxy]\nlisten = \"127.0.0.1:1001\"\n")
	if got := load(Sources{File: p}); got != "127.0.0.1:1001" {
		t.Errorf("--config should win: listen = %s", got)
	}
}

func TestMissingExplicitFileFails(t *testing.T) {
	_, err := Load(Sources{File: filepath.Join(t.TempDir(), "nope.toml"), LookupEnv: noEnv})
	if err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("err = %v, want one naming --config", err)
	}
}

func TestEnvOverrides(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "[app.asset_sync.retry]\nmax_attempts = 3\n")
	env := envMap(map[string]string{
		"FUSOU_APP_ASSET_SYNC_RETRY_MAX_ATTEMPTS":      "9",
		"FUSOU_PROXY_MITM_HOSTS":                       "kancolle-server.com, Example.org",
		"FUSOU_PROXY_CAPTURE_ENABLE":                   "false",
		"FUSOU_APP_ASSET_SYNC_RETRY_MAX_PENDING_BYTES": "1048576",
	})
	got, err := Load(Sources{File: p, DataDir: dir, LookupEnv: env})
	if err != nil {
		t.Fatal(err)
	}
	if got.App.AssetSync.Retry.MaxAttempts != 9 {
		t.Errorf("max_attempts = %d, want the env's 9", got.App.AssetSync.Retry.MaxAttempts)
	}
	if want := []string{"kancolle-server.com", "example.org"}; !reflect.DeepEqual(got.Proxy.MITMHosts, want) {
		t.Errorf("mitm_hosts = %q, want %q", got.Proxy.MITMHosts, want)
	}
	if got.Proxy.Capture.Enable {
		t.Error("capture.enable should be false from the env")
	}
	if got.App.AssetSync.Retry.MaxPendingBytes != 1<<20 {
		t.Errorf("max_pending_bytes = %d", got.App.AssetSync.Retry.MaxPendingBytes)
	}
}

func TestDataDirPrecedence(t *testing.T) {
	work := t.TempDir()
	writeFile(t, work, "[app]\ndata_dir = \""+filepath.ToSlash(filepath.Join(work, "fromfile"))+"\"\n")
	envDir := filepath.Join(work, "fromenv")
	flagDir := filepath.Join(work, "fromflag")
	cases := []struct {
		name string
		src  Sources
		want string
	}{
		{"file", Sources{WorkDir: work, LookupEnv: noEnv}, filepath.Join(work, "fromfile")},
		{"env beats file", Sources{WorkDir: work, LookupEnv: envMap(map[string]string{DataDirEnv: envDir})}, envDir},
		{"flag beats env", Sources{WorkDir: work, DataDir: flagDir, LookupEnv: envMap(map[string]string{DataDirEnv: envDir})}, flagDir},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Load(c.src)
			if err != nil {
				t.Fatal(err)
			}
			if got.DataDir != c.want {
				t.Errorf("DataDir = %q, want %q", got.DataDir, c.want)
			}
		})
	}
}

func TestBadValuesNameTheKey(t *testing.T) {
	cases := []struct {
		toml, key string
	}{
		{"[proxy]\nlisten = \"8050\"", "proxy.listen"},
		{"[proxy]\nlisten = 8050", "proxy.listen"},
		{"[proxy]\nlisten = \"127.0.0.1:99999\"", "proxy.listen"},
		{"[proxy]\nmitm_hosts = []", "proxy.mitm_hosts"},
		{"[proxy]\nmitm_hosts = [\"*.kancolle-server.com\"]", "proxy.mitm_hosts"},
		{"[proxy]\nmitm_hosts = [\"com\"]", "proxy.mitm_hosts"},
		{"[proxy]\nmitm_hosts = [\"co.jp\"]", "proxy.mitm_hosts"},
		{"[proxy]\nmitm_hosts = [\"\"]", "proxy.mitm_hosts"},
		{"[proxy]\nconnect_to = [\"a.example:443:127.0.0.1\"]", "proxy.connect_to"},
		{"[proxy]\nconnect_to = [\"a.example:https:127.0.0.1:9443\"]", "proxy.connect_to"},
		{"[proxy]\nupstream_ca_file = \"/nonexistent/ca.pem\"", "proxy.upstream_ca_file"},
		{"[proxy]\nmax_conns = 0", "proxy.max_conns"},
		{"[proxy]\nmax_conns = 2000000", "proxy.max_conns"},
		{"[proxy.capture]\npath_prefixes = [\"kcs2/\"]", "proxy.capture.path_prefixes"},
		{"[proxy.capture]\nmax_asset_bytes = 0", "proxy.capture.max_asset_bytes"},
		{"[proxy.capture]\nenable = \"yes please\"", "proxy.capture.enable"},
		{"[app.asset_sync]\nasset_upload_endpoint = \"fusou.dev/api\"", "app.asset_sync.asset_upload_endpoint"},
		{"[app.asset_sync]\nasset_existing_keys_endpoint = \"ftp://fusou.dev/keys\"", "app.asset_sync.asset_existing_keys_endpoint"},
		{"[app.asset_sync]\nworkers = 0", "app.asset_sync.workers"},
		{"[app.asset_sync]\nworkers = 1.5", "app.asset_sync.workers"},
		{"[app.asset_sync]\nasset_extensions = [\"a/b\"]", "app.asset_sync.asset_extensions"},
		{"[app.asset_sync.retry]\nmax_attempts = 0", "app.asset_sync.retry.max_attempts"},
		{"[app.asset_sync.retry]\nconcurrency = -1", "app.asset_sync.retry.concurrency"},
		{"[control]\nlisten = \"0.0.0.0:8051\"", "control.listen"},
		{"[control]\ntoken = \"short\"", "control.token"},
		{"[control]\nallowed_origins = [\"localhost:3000\"]", "control.allowed_origins"},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Load(Sources{File: writeFile(t, dir, c.toml), DataDir: dir, LookupEnv: noEnv})
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			if ce.Key != c.key {
				t.Errorf("key = %s, want %s (%v)", ce.Key, c.key, err)
			}
			if !strings.Contains(err.Error(), c.key) || strings.Contains(err.Error(), "\n") {
				t.Errorf("message must be one line naming the key: %q", err)
			}
		})
	}
}

func TestBadEnvValueNamesTheKey(t *testing.T) {
	_, err := Load(Sources{DataDir: t.TempDir(), WorkDir: t.TempDir(),
		LookupEnv: envMap(map[string]string{"FUSOU_APP_ASSET_SYNC_WORKERS": "many"})})
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "app.asset_sync.workers" {
		t.Fatalf("err = %v, want one naming app.asset_sync.workers", err)
	}
}

func TestAllowRemoteControl(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "[control]\nlisten = \"0.0.0.0:8051\"\nallow_remote = true\n")
	if _, err := Load(Sources{File: p, DataDir: dir, LookupEnv: noEnv}); err != nil {
		t.Fatalf("allow_remote should permit a non-loopback control.listen: %v", err)
	}
}

func TestUnknownKeyIsAWarning(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "[proxy]\nlisten = \"127.0.0.1:8050\"\nlsiten = \"x\"\n")
	got, err := Load(Sources{File: p, DataDir: dir, LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], "proxy.lsiten") {
		t.Errorf("warnings = %q, want one naming proxy.lsiten", got.Warnings)
	}
}

func TestParseErrorNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "[proxy\nlisten = ")
	_, err := Load(Sources{File: p, DataDir: dir, LookupEnv: noEnv})
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want one naming %s", err, p)
	}
}

func TestWriteTOMLRoundTripsAndRedacts(t *testing.T) {
	c := Default()
	c.Control.Token = "0123456789abcdef-very-secret"
	c.Proxy.ConnectTo = []string{`w01y.kancolle-server.com:443:127.0.0.1:9443`}
	var buf bytes.Buffer
	if err := c.WriteTOML(&buf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "very-secret") {
		t.Fatalf("control.token leaked into config show:\n%s", buf.String())
	}
	dir := t.TempDir()
	got, err := Load(Sources{File: writeFile(t, dir, strings.Replace(buf.String(), Redacted, "0123456789abcdef-very-secret", 1)), DataDir: dir, LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("output does not load back: %v\n%s", err, buf.String())
	}
	if !reflect.DeepEqual(got.Config, c) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", got.Config, c)
	}
}
