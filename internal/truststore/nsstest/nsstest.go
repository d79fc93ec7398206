// Package nsstest makes and reads real NSS databases with NSS's certutil, for the tests of
// package truststore and of the ca command.
package nsstest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// NewDB makes a real, empty NSS database in dir, as a browser's first start does.
func NewDB(t testing.TB, certutil, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(certutil, "-N", "-d", "sql:"+dir, "--empty-password").CombinedOutput(); err != nil {
		t.Fatalf("certutil -N: %v\n%s", err, out)
	}
}

// Trust is the trust column `certutil -L` lists for nickname in the database in dir, or "" if
// the database holds no such certificate.
func Trust(t testing.TB, certutil, dir, nickname string) string {
	t.Helper()
	out, err := exec.Command(certutil, "-L", "-d", "sql:"+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("certutil -L: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, nickname+" "); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}
