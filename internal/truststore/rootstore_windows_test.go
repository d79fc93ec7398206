package truststore

import (
	"os"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/internal/private/privatetest"
)

// The real CurrentUser Root store through crypt32. On real Windows, adding a root shows a
// confirmation dialog, so the test runs there only when asked (and someone clicks Yes).
func TestCurrentUserRootStore(t *testing.T) {
	if !privatetest.UnderWine() && os.Getenv("FUSOU_TEST_WINDOWS_ROOT") == "" {
		t.Skip("adds a root to your Windows store behind a confirmation dialog: set FUSOU_TEST_WINDOWS_ROOT=1 to run it and click Yes")
	}
	ca := mustCA(t)
	env := &Env{}
	sys := Stores{System: true}
	t.Cleanup(func() { env.Uninstall(ca, sys) })
	cycle(t, env, ca, sys, "", 3)
	if privatetest.UnderWine() {
		t.Skip("wine 8's crypt32 takes the deletion but never writes it to the registry store behind CurrentUser Root, so the root is back on the next open")
	}
	if r := only(t, env.Uninstall(ca, sys)); r.Outcome != NotPresent {
		t.Fatalf("uninstall again: %+v, want %s", r, NotPresent)
	}
}
