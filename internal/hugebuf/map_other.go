//go:build !linux

package hugebuf

// mapHuge has no huge pages to ask for here: the arena stays empty.
func mapHuge(int) []byte { return nil }
