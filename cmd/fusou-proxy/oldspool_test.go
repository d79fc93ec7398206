package main

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// An earlier version's spool folder is removed at start, with one WARN saying what it held;
// a data dir without one logs nothing.
func TestOldSpoolIsRemovedWithAWarning(t *testing.T) {
	dir := t.TempDir()
	core, logs := observer.New(zap.WarnLevel)
	removeOldSpool(dir, zap.New(core))
	if logs.Len() != 0 {
		t.Fatalf("no spool folder: logged %v", logs.All())
	}

	spool := filepath.Join(dir, oldSpoolDir)
	if err := os.MkdirAll(filepath.Join(spool, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{"journal-000001.log": 100, "capture-r1": 20, "sub/x": 3} {
		if err := os.WriteFile(filepath.Join(spool, name), make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removeOldSpool(dir, zap.New(core))
	if _, err := os.Lstat(spool); !os.IsNotExist(err) {
		t.Errorf("spool folder still there: %v", err)
	}
	all := logs.All()
	if len(all) != 1 {
		t.Fatalf("logged %d lines, want one WARN", len(all))
	}
	f := all[0].ContextMap()
	if f["files"] != int64(3) || f["bytes"] != int64(123) {
		t.Errorf("WARN fields %v, want 3 files and 123 bytes", f)
	}
}
