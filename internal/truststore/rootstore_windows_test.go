package truststore

import (
	"os"
	"testing"

	"golang.org/x/sys/windows"
)

// underWine reports whether the test runs in Wine, whose ntdll has wine_get_version.
func underWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

// The real CurrentUser Root store through crypt32. On real Windows, adding a root shows a
// confirmation dialog, so the test runs there only when asked (and someone clicks Yes).
func TestCurrentUserRootStore(t *testing.T) {
	if !underWine() && os.Getenv("FUSOU_TEST_WINDOWS_ROOT") == "" {
		t.Skip("adds a root to your Windows store behind a confirmation dialog: set FUSOU_TEST_WINDOWS_ROOT=1 to run it and click Yes")
	}
	ca := mustCA(t)
	env := &Env{}
	sys := Stores{System: true}
	t.Cleanup(func() { env.Uninstall(ca, sys) })
	steps := []struct {
		do   func(CA, Stores) []Result
		want Outcome
	}{{env.Install, Installed}, {env.Install, AlreadyPresent}, {env.Uninstall, Removed}, {env.Uninstall, NotPresent}}
	for i, s := range steps {
		if i == 3 && underWine() {
			t.Skip("wine 8's crypt32 takes the deletion but never writes it to the registry store behind CurrentUser Root, so the root is back on the next open")
		}
		if r := only(t, s.do(ca, sys)); r.Outcome != s.want {
			t.Fatalf("step %d: %+v, want %s", i, r, s.want)
		}
	}
}
