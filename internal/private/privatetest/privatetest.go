// Package privatetest helps tests of code that keeps files private (package private).
package privatetest

import (
	"errors"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/internal/private"
)

// Expose makes path readable by every user: group and other read bits on Unix, an entry
// granting Everyone full access on Windows. It fails the test unless private.Check then sees it.
func Expose(tb testing.TB, path string) {
	tb.Helper()
	if err := expose(path); err != nil {
		tb.Fatalf("expose %s: %v", path, err)
	}
	if err := private.Check(path); !errors.Is(err, private.ErrExposed) {
		tb.Fatalf("after exposing %s, private.Check = %v, want ErrExposed", path, err)
	}
}

// Limits of wine 8.0, not of Windows, that SkipUnderWine names.
const (
	// WineNoDescriptors: wine keeps no security descriptor for a file. It turns a DACL into
	// Unix mode bits and makes one up from them when asked, so no DACL there is protected,
	// and a new file does not inherit its folder's entries.
	WineNoDescriptors = "wine 8.0 keeps no security descriptor for a file, only Unix mode bits: a DACL read back is made up from them, never protected, and not inherited"
	// WineNamedMergesParent: wine's SetNamedSecurityInfo adds the parent folder's inheritable
	// entries even to a DACL it is told is protected, so private.Dir cannot shut others out.
	WineNamedMergesParent = "wine 8.0's SetNamedSecurityInfo adds the parent folder's inheritable entries (Everyone) even to a protected DACL"
)

// SkipUnderWine skips the test under wine, naming the wine limit that makes it fail there.
func SkipUnderWine(tb testing.TB, limit string) {
	tb.Helper()
	if UnderWine() {
		tb.Skip("wine limit, not a Windows one: " + limit)
	}
}

// WantPrivate fails the test unless private.Check(path) passes.
func WantPrivate(tb testing.TB, path string) {
	tb.Helper()
	if err := private.Check(path); err != nil {
		tb.Errorf("not private: %v", err)
	}
}
