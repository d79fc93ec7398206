package privatetest

import "golang.org/x/sys/windows"

// UnderWine reports whether the test runs under wine rather than Windows: only wine's ntdll
// has wine_get_version.
func UnderWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}
