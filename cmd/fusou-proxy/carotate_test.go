package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `ca rotate` on a fresh data dir just makes a CA: exit 0, no old CA kept aside, and no talk
// of trusting it "again".
func TestCARotateOnFreshDir(t *testing.T) {
	home := t.TempDir()
	data := filepath.Join(home, "data")
	code, out, errOut := runCLI(t, home, "ca", "rotate", "--data-dir", data)
	if code != 0 {
		t.Fatalf("ca rotate exited %d: %s", code, errOut)
	}
	if strings.Contains(out, "again") || strings.Contains(out, "old one") {
		t.Errorf("ca rotate on a fresh dir speaks of an old CA: %s", out)
	}
	ents, err := os.ReadDir(filepath.Join(data, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() {
			t.Errorf("a fresh rotate kept %s aside", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(data, "ca", "fusou-ca.pem")); err != nil {
		t.Errorf("no CA made: %v", err)
	}
	code, out, _ = runCLI(t, home, "ca", "rotate", "--data-dir", data)
	if code != 0 || !strings.Contains(out, "old one kept aside") {
		t.Errorf("a second rotate: exit %d, %q; want the old CA kept aside", code, out)
	}
}
