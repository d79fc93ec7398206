//go:build !windows

package privatetest

// UnderWine reports whether the test runs under wine rather than Windows.
func UnderWine() bool { return false }
