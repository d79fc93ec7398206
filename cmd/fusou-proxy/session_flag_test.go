package main

import (
	"strings"
	"testing"
	"time"
)

// --expires-at is checked by the command, and its errors name the flag.
func TestParseExpiresFlag(t *testing.T) {
	now := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)
	for _, ok := range []string{"2026-12-04T10:00:00Z", "2026-12-04T19:00:00+09:00", "1796382000"} {
		if _, err := parseExpiresFlag(ok, now); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"tomorrow", "2026-12-04", "-5", "1796382000000000", "2026-12-04T08:00:00Z", "1700000000"} {
		_, err := parseExpiresFlag(bad, now)
		if err == nil || !strings.Contains(err.Error(), "--expires-at") {
			t.Errorf("%q: error %v, want one naming --expires-at", bad, err)
		}
	}
}
