package control

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// auto_refresh says who refreshes the session; it defaults to the caller (SPEC §8).
func TestPostSessionAutoRefresh(t *testing.T) {
	for _, c := range []struct {
		member string
		want   bool
	}{{"", false}, {`,"auto_refresh":false`, false}, {`,"auto_refresh":true`, true}} {
		f := newFixture(t, nil)
		w := f.do(newReq(http.MethodPost, "/v1/session", `{"access_token":"acc","refresh_token":"ref"`+c.member+`}`))
		if w.Code != http.StatusNoContent {
			t.Fatalf("%q: status %d", c.member, w.Code)
		}
		sets, _ := f.session.calls()
		if len(sets) != 1 || sets[0].AutoRefresh != c.want {
			t.Errorf("%q: AutoRefresh = %v, want %v", c.member, sets[0].AutoRefresh, c.want)
		}
		kind := f.do(newReq(http.MethodGet, "/v1/status", "")).Body.String()
		wantKind := map[bool]string{false: `"kind":"caller"`, true: `"kind":"proxy"`}[c.want]
		if !strings.Contains(kind, wantKind) {
			t.Errorf("%q: status %s lacks %s", c.member, kind, wantKind)
		}
	}
}

// An access token that has already expired is refused rather than held to be refused by the
// server; the session held before stays.
func TestPostSessionExpiredIsRefused(t *testing.T) {
	f := newFixture(t, nil)
	if w := f.do(newReq(http.MethodPost, "/v1/session", goodBody)); w.Code != http.StatusNoContent {
		t.Fatalf("first post: %d", w.Code)
	}
	for _, exp := range []string{fmt.Sprint(time.Now().Add(-time.Minute).Unix()), `"2020-01-01T00:00:00Z"`} {
		w := f.do(newReq(http.MethodPost, "/v1/session", `{"access_token":"a","refresh_token":"b","expires_at":`+exp+`}`))
		if msg := wantJSONError(t, w, http.StatusBadRequest); !strings.Contains(msg, "expires_at") {
			t.Errorf("error %q does not name expires_at", msg)
		}
	}
	if sets, clears := f.session.calls(); len(sets) != 1 || clears != 0 {
		t.Errorf("%d sets, %d clears after refused posts; want 1, 0", len(sets), clears)
	}
}
