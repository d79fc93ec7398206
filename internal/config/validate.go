package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/fusou-proxy/fusou-proxy/internal/dialrule"

	"golang.org/x/net/publicsuffix"
)

// Validate checks every key and returns the first problem as an *Error naming it.
// It also normalises lists whose case does not matter (hosts, extensions).
func (c *Config) Validate() error {
	checks := []struct {
		key string
		err func() string
	}{
		{"proxy.listen", func() string { return hostPort(c.Proxy.Listen) }},
		{"proxy.mitm_hosts", func() string { return domains(c.Proxy.MITMHosts) }},
		{"proxy.upstream_ca_file", func() string { return readableFile(c.Proxy.UpstreamCAFile) }},
		{"proxy.connect_to", func() string { return connectTo(c.Proxy.ConnectTo) }},
		{"proxy.max_conns", func() string { return between(int64(c.Proxy.MaxConns), 1, MaxConnsLimit) }},
		{"proxy.capture.path_prefixes", func() string { return pathPrefixes(c.Proxy.Capture.PathPrefixes) }},
		{"proxy.capture.skip_path_prefixes", func() string { return pathPrefixes(c.Proxy.Capture.SkipPathPrefixes) }},
		{"proxy.capture.max_asset_bytes", func() string { return between(c.Proxy.Capture.MaxAssetBytes, 1, MaxAssetBytesLimit) }},
		{"app.asset_sync.asset_upload_endpoint", func() string { return httpURL(c.App.AssetSync.AssetUploadEndpoint) }},
		{"app.asset_sync.asset_existing_keys_endpoint", func() string { return httpURL(c.App.AssetSync.AssetExistingKeysEndpoint) }},
		{"app.asset_sync.asset_extensions", func() string { return extensions(c.App.AssetSync.AssetExtensions) }},
		{"app.asset_sync.workers", func() string { return between(int64(c.App.AssetSync.Workers), 1, 64) }},
		{"app.asset_sync.queue_size", func() string { return between(int64(c.App.AssetSync.QueueSize), 1, 1<<20) }},
		{"app.asset_sync.connect_timeout_seconds", func() string { return between(int64(c.App.AssetSync.ConnectTimeoutSeconds), 1, 3600) }},
		{"app.asset_sync.request_timeout_seconds", func() string { return between(int64(c.App.AssetSync.RequestTimeoutSeconds), 1, 86400) }},
		{"app.asset_sync.retry.max_attempts", func() string { return between(int64(c.App.AssetSync.Retry.MaxAttempts), 1, 1000) }},
		{"app.asset_sync.retry.ttl_seconds", func() string { return between(c.App.AssetSync.Retry.TTLSeconds, 60, 365*86400) }},
		{"app.asset_sync.retry.interval_seconds", func() string { return between(int64(c.App.AssetSync.Retry.IntervalSeconds), 1, 86400) }},
		{"app.asset_sync.retry.concurrency", func() string { return between(int64(c.App.AssetSync.Retry.Concurrency), 1, 64) }},
		{"app.asset_sync.retry.max_pending_bytes", func() string { return between(c.App.AssetSync.Retry.MaxPendingBytes, 1, 1<<50) }},
		{"app.asset_sync.retry.max_pending_files", func() string { return between(int64(c.App.AssetSync.Retry.MaxPendingFiles), 1, 100_000_000) }},
		{"app.auth.supabase_url", func() string { return optionalHTTPURL(c.App.Auth.SupabaseURL) }},
		{"control.listen", func() string { return controlListen(c.Control.Listen, c.Control.AllowRemote) }},
		{"control.token", func() string { return controlToken(c.Control.Token) }},
		{"control.allowed_origins", func() string { return origins(c.Control.AllowedOrigins) }},
	}
	for _, ch := range checks {
		if msg := ch.err(); msg != "" {
			return &Error{Key: ch.key, Msg: msg}
		}
	}
	lowerAll(c.Proxy.MITMHosts)
	for i, e := range c.App.AssetSync.AssetExtensions {
		c.App.AssetSync.AssetExtensions[i] = strings.ToLower(strings.TrimPrefix(e, "."))
	}
	return nil
}

func lowerAll(list []string) {
	for i, s := range list {
		list[i] = strings.ToLower(strings.TrimSuffix(s, "."))
	}
}

func hostPort(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("must be host:port (e.g. 127.0.0.1:8050), got %q", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("port must be a number 0-65535, got %q", port)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Sprintf("must be host:port (e.g. 127.0.0.1:8050), got %q", s)
	}
	return ""
}

var domainRE = regexp.MustCompile(`^(?i)([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?\.?$`)

func domains(list []string) string {
	if len(list) == 0 {
		return "must name at least one domain (e.g. [\"kancolle-server.com\"])"
	}
	for _, d := range list {
		if !domainRE.MatchString(d) || net.ParseIP(d) != nil || len(d) > 253 {
			return fmt.Sprintf("must be domain names without wildcards or ports, got %q", d)
		}
		// A CA constrained to a public suffix ("com", "co.jp") could vouch for every site
		// under it; each entry must be a registrable domain or one of its subdomains.
		if _, err := publicsuffix.EffectiveTLDPlusOne(strings.ToLower(strings.TrimSuffix(d, "."))); err != nil {
			return fmt.Sprintf("must be registrable domains (not a public suffix such as \"com\"), got %q", d)
		}
	}
	return ""
}

func readableFile(path string) string {
	if path == "" {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("must be a readable PEM file: %v", err)
	}
	f.Close()
	return ""
}

// connectTo checks curl --connect-to style "HOST:PORT:ADDR:PORT2" entries.
func connectTo(list []string) string {
	for _, s := range list {
		if _, err := dialrule.Parse(s); err != nil {
			return fmt.Sprintf("entries must be HOST:PORT:ADDR:PORT2 (e.g. \"w01y.kancolle-server.com:443:127.0.0.1:9443\"): %v", err)
		}
	}
	return ""
}

func pathPrefixes(list []string) string {
	for _, p := range list {
		if !strings.HasPrefix(p, "/") {
			return fmt.Sprintf("entries must start with /, got %q", p)
		}
	}
	return ""
}

func between(n, lo, hi int64) string {
	if n < lo || n > hi {
		return fmt.Sprintf("must be between %d and %d, got %d", lo, hi, n)
	}
	return ""
}

func httpURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Sprintf("must be an absolute http(s) URL, got %q", s)
	}
	return ""
}

func extensions(list []string) string {
	for _, e := range list {
		e = strings.TrimPrefix(e, ".")
		if e == "" || strings.ContainsAny(e, "./\\ ") {
			return fmt.Sprintf("entries must be file extensions like \"mp3\", got %q", e)
		}
	}
	return ""
}

func controlListen(s string, allowRemote bool) string {
	if msg := hostPort(s); msg != "" {
		return msg
	}
	host, _, _ := net.SplitHostPort(s)
	if !allowRemote && !isLoopbackHost(host) {
		return fmt.Sprintf("must be a loopback address (127.0.0.1, ::1 or localhost) unless control.allow_remote = true, got %q", s)
	}
	return ""
}

// isLoopbackHost reports whether host (no port) is localhost or a loopback IP.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func controlToken(tok string) string {
	if tok != "" && len(tok) < 16 {
		return "must be empty (generated) or at least 16 characters"
	}
	return ""
}

func origins(list []string) string {
	for _, o := range list {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Sprintf("entries must be origins like \"http://localhost:3000\", got %q", o)
		}
	}
	return ""
}

// optionalHTTPURL is httpURL, except that empty is allowed (the feature stays off).
func optionalHTTPURL(s string) string {
	if s == "" {
		return ""
	}
	return httpURL(s)
}
