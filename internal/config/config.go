// Package config loads, validates and prints fusou-proxy's configuration (SPEC §3).
//
// Start with Load: it reads configs.toml through viper from the search order (--config FILE,
// ./configs.toml, <data_dir>/configs.toml), lays FUSOU_* environment overrides on top, and
// falls back to Default for every key that is not set. The Config struct is the single list
// of keys: its `key` tags give the TOML names, and the decoding, the unknown-key warnings,
// `config show` and the test that checks the repository's configs.toml all walk it.
package config

import "time"

// Config is the whole effective configuration. Each field's `key` tag is its TOML name.
type Config struct {
	Proxy   Proxy   `key:"proxy"`
	App     App     `key:"app"`
	Control Control `key:"control"`
}

// Proxy is the [proxy] table: the listener the browser talks to and what it decrypts.
type Proxy struct {
	Listen         string   `key:"listen"`
	MITMHosts      []string `key:"mitm_hosts"`
	UpstreamCAFile string   `key:"upstream_ca_file"`
	ConnectTo      []string `key:"connect_to"`
	MaxConns       int      `key:"max_conns"`
	Capture        Capture  `key:"capture"`
}

// Capture is the [proxy.capture] table: which responses are captured.
type Capture struct {
	Enable           bool     `key:"enable"`
	PathPrefixes     []string `key:"path_prefixes"`
	SkipPathPrefixes []string `key:"skip_path_prefixes"`
	MaxAssetBytes    int64    `key:"max_asset_bytes"`
}

// App is the [app] table.
type App struct {
	DataDir   string    `key:"data_dir"`
	AssetSync AssetSync `key:"asset_sync"`
	Auth      Auth      `key:"auth"`
}

// Auth is the [app.auth] table: FUSOU's Supabase project, for refreshing a session the proxy
// owns (SPEC §8).
type Auth struct {
	SupabaseURL     string `key:"supabase_url"`
	SupabaseAnonKey string `key:"supabase_anon_key"`
	RememberSession bool   `key:"remember_session"`
}

// AssetSync is the [app.asset_sync] table: the FUSOU API and the upload workers.
type AssetSync struct {
	Enable                    bool     `key:"enable"`
	AssetUploadEndpoint       string   `key:"asset_upload_endpoint"`
	AssetExistingKeysEndpoint string   `key:"asset_existing_keys_endpoint"`
	AssetExtensions           []string `key:"asset_extensions"`
	Workers                   int      `key:"workers"`
	QueueSize                 int      `key:"queue_size"`
	ConnectTimeoutSeconds     int      `key:"connect_timeout_seconds"`
	RequestTimeoutSeconds     int      `key:"request_timeout_seconds"`
	Retry                     Retry    `key:"retry"`
}

// Retry is the [app.asset_sync.retry] table: the retry service and the pending store's limits.
type Retry struct {
	MaxAttempts     int   `key:"max_attempts"`
	TTLSeconds      int64 `key:"ttl_seconds"`
	IntervalSeconds int   `key:"interval_seconds"`
	Concurrency     int   `key:"concurrency"`
	MaxPendingBytes int64 `key:"max_pending_bytes"`
	MaxPendingFiles int   `key:"max_pending_files"`
}

// Control is the [control] table: the local control endpoint.
type Control struct {
	Listen         string   `key:"listen"`
	Token          string   `key:"token"`
	AllowedOrigins []string `key:"allowed_origins"`
	AllowRemote    bool     `key:"allow_remote"`
}

// Defaults for the keys whose values other packages also need.
const (
	// DefaultListen is where the proxy listens: loopback only, so nothing else on the
	// network can use it.
	DefaultListen = "127.0.0.1:8050"
	// DefaultControlListen is the control endpoint's address, loopback only.
	DefaultControlListen = "127.0.0.1:8051"
	// MaxAssetBytesLimit is the FUSOU server's own limit (200 MiB); nothing larger is captured.
	MaxAssetBytesLimit = 200 << 20
	// MaxConnsLimit is the largest proxy.max_conns accepted: 2^20, Linux's default ceiling
	// on a process's file descriptors (fs.nr_open).
	MaxConnsLimit = 1 << 20
	// DefaultSupabaseURL is FUSOU's Supabase project (FUSOU-WEB's PUBLIC_SUPABASE_URL); empty
	// until the project publishes it, which leaves refreshing off.
	DefaultSupabaseURL = ""
)

// ServerExtensions are the extensions the FUSOU server accepts (its default allow-list; any
// other is refused with 415), so nothing else is captured by default.
var ServerExtensions = []string{"png", "jpg", "jpeg", "gif", "webp", "bmp", "json"}

// Default returns the built-in configuration: what runs when no file sets anything.
func Default() Config {
	return Config{
		Proxy: Proxy{
			Listen:    DefaultListen,
			MITMHosts: []string{"kancolle-server.com"},
			ConnectTo: []string{},
			MaxConns:  4096,
			Capture: Capture{
				Enable:           true,
				PathPrefixes:     []string{"/kcs2/", "/kcs/", "/kcscontents/", "/gadget_html5/"},
				SkipPathPrefixes: []string{"/kcsapi/"},
				MaxAssetBytes:    MaxAssetBytesLimit,
			},
		},
		App: App{
			AssetSync: AssetSync{
				Enable:                    true,
				AssetUploadEndpoint:       "https://fusou.dev/api/asset-sync/upload",
				AssetExistingKeysEndpoint: "https://fusou.dev/api/asset-sync/keys",
				AssetExtensions:           append([]string(nil), ServerExtensions...),
				Workers:                   2,
				QueueSize:                 256,
				ConnectTimeoutSeconds:     10,
				RequestTimeoutSeconds:     60,
				Retry: Retry{
					MaxAttempts:     5,
					TTLSeconds:      86400,
					IntervalSeconds: 60,
					Concurrency:     2,
					MaxPendingBytes: 2 << 30,
					MaxPendingFiles: 100000,
				},
			},
			Auth: Auth{
				SupabaseURL:     DefaultSupabaseURL,
				RememberSession: true,
			},
		},
		Control: Control{
			Listen:         DefaultControlListen,
			AllowedOrigins: []string{},
		},
	}
}

// ConnectTimeout is connect_timeout_seconds as a duration.
func (a AssetSync) ConnectTimeout() time.Duration {
	return time.Duration(a.ConnectTimeoutSeconds) * time.Second
}

// RequestTimeout is request_timeout_seconds as a duration.
func (a AssetSync) RequestTimeout() time.Duration {
	return time.Duration(a.RequestTimeoutSeconds) * time.Second
}

// TTL is ttl_seconds as a duration.
func (r Retry) TTL() time.Duration { return time.Duration(r.TTLSeconds) * time.Second }

// Interval is interval_seconds as a duration.
func (r Retry) Interval() time.Duration { return time.Duration(r.IntervalSeconds) * time.Second }
