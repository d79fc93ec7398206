package assets

import (
	"net/url"
	"testing"
)

// Paths whose decoded form holds "?", "#", a backslash, a control character or a dot
// segment are passed through and never captured (SPEC §4), however they were encoded.
func TestEncodedPathsAreNotCaptured(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, raw := range []string{
		"/kcs2/js/main.js%3Fx.png",
		"/kcs2/img/title/01.png%23ZZZ.png",
		"/kcs2/img/a%5Cb.png",
		"/kcs2/img/a%00.png",
		"/kcs2/img/a%0D%0A.png",
		"/kcs2/img/%2E%2E/a.png",
	} {
		u, err := url.Parse("https://w01y.kancolle-server.com" + raw)
		if err != nil {
			t.Fatal(err)
		}
		if f.capture(u.Path, png(1), "") {
			t.Errorf("%s (decoded %q) was captured", raw, u.Path)
		}
	}
	if !f.capture("/kcs2/img/title/01.png", png(2), "") {
		t.Error("a plain asset path was not captured")
	}
}
