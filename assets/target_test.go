package assets

import "testing"

// A retry goes to the entry's target_url only when its origin is the configured endpoint's,
// so the session's tokens never go anywhere the configuration did not name (SPEC §6).
func TestEndpointForTarget(t *testing.T) {
	u, err := NewUploader(UploaderOptions{Endpoint: "https://fusou.dev/api/asset-sync/upload", Session: &SessionHolder{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ target, want string }{
		{"", "https://fusou.dev/api/asset-sync/upload"},
		{"https://fusou.dev/api/asset-sync/upload", "https://fusou.dev/api/asset-sync/upload"},
		{"https://fusou.dev/api/v2/asset-sync/upload", "https://fusou.dev/api/v2/asset-sync/upload"},
		{"https://FUSOU.dev:443/api/x", "https://FUSOU.dev:443/api/x"},
		{"http://fusou.dev/api/asset-sync/upload", "https://fusou.dev/api/asset-sync/upload"},
		{"https://evil.example/api/asset-sync/upload", "https://fusou.dev/api/asset-sync/upload"},
		{"https://fusou.dev.evil.example/upload", "https://fusou.dev/api/asset-sync/upload"},
		{"https://fusou.dev:8443/upload", "https://fusou.dev/api/asset-sync/upload"},
		{"localfs", "https://fusou.dev/api/asset-sync/upload"},
		{"://", "https://fusou.dev/api/asset-sync/upload"},
	} {
		if got := u.endpointFor(c.target).String(); got != c.want {
			t.Errorf("target %q: sent to %s, want %s", c.target, got, c.want)
		}
	}
}
