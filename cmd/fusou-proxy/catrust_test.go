package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/internal/truststore/nsstest"
)

// These tests never touch the system store (--system=false): they may run as root, and the
// machine's CA folder is not theirs. The system store has its own tests in internal/truststore.

// newNSSDB makes an empty NSS database at home/.pki/nssdb, as Chromium's first start does.
func newNSSDB(t *testing.T, certutil, home string) string {
	t.Helper()
	db := filepath.Join(home, ".pki", "nssdb")
	nsstest.NewDB(t, certutil, db)
	return db
}

var caNameRE = regexp.MustCompile(`fusou-proxy CA [0-9a-f]{8}`)

// `ca install` and `ca uninstall` through the binary, against a real NSS database in the
// user's home: trusted with C,, and no key, idempotent both ways; then `ca rotate` names the
// command that removes the old CA, and that command works.
func TestCAInstallUninstallNSS(t *testing.T) {
	if runtime.GOOS == "windows" {
		// And certutil.exe there is Windows's own, not NSS's.
		t.Skip("ca install leaves NSS alone on Windows: Firefox trusts the Windows store")
	}
	certutil := requireTool(t, "certutil")
	home := t.TempDir()
	data := filepath.Join(home, "data")
	db := newNSSDB(t, certutil, home)
	ca := func(want int, args ...string) string {
		t.Helper()
		args = append(args, "--data-dir", data)
		if args[0] != "rotate" {
			args = append(args, "--system=false")
		}
		code, out, errOut := runCLI(t, home, append([]string{"ca"}, args...)...)
		if code != want {
			t.Fatalf("ca %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errOut)
		}
		return out
	}

	out := ca(0, "install")
	name := caNameRE.FindString(out)
	if name == "" || !strings.Contains(out, "nss ~/.pki/nssdb (Chrome, Chromium): installed") || !strings.Contains(out, "Restart your browser") {
		t.Fatalf("ca install printed:\n%s", out)
	}
	if flags := nsstest.Trust(t, certutil, db, name); flags != "C,," {
		t.Errorf("the NSS database lists %q with trust %q, want C,,", name, flags)
	}
	if b, _ := exec.Command(certutil, "-K", "-d", "sql:"+db).CombinedOutput(); !strings.Contains(string(b), "no keys found") {
		t.Errorf("the NSS database holds a key:\n%s", b)
	}
	if out := ca(0, "install"); !strings.Contains(out, "nss ~/.pki/nssdb (Chrome, Chromium): already present") || strings.Contains(out, "Restart") {
		t.Errorf("a second install printed:\n%s", out)
	}
	if out := ca(0, "uninstall"); !strings.Contains(out, "(Chrome, Chromium): removed") {
		t.Errorf("ca uninstall printed:\n%s", out)
	}
	if flags := nsstest.Trust(t, certutil, db, name); flags != "" {
		t.Errorf("after uninstall the NSS database still lists %q (%s)", name, flags)
	}
	if out := ca(0, "uninstall"); !strings.Contains(out, "(Chrome, Chromium): not present") {
		t.Errorf("a second uninstall printed:\n%s", out)
	}

	// Rotation: the old CA stays trusted until the printed command removes it.
	ca(0, "install")
	out = ca(0, "rotate")
	m := regexp.MustCompile(`fusou-proxy ca uninstall --cert "([^"]+)"`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ca rotate does not say how to remove the old CA:\n%s", out)
	}
	ca(0, "install")
	newName := caNameRE.FindString(strings.TrimPrefix(out, "new CA \""))
	if newName == name || nsstest.Trust(t, certutil, db, newName) != "C,," || nsstest.Trust(t, certutil, db, name) != "C,," {
		t.Fatalf("after rotate and install, want both %s and %s trusted", name, newName)
	}
	ca(0, "uninstall", "--cert", m[1])
	if nsstest.Trust(t, certutil, db, name) != "" || nsstest.Trust(t, certutil, db, newName) != "C,," {
		t.Errorf("uninstall --cert %s: want only the new CA %s left", m[1], newName)
	}
}

// When no store can be updated, the exit code says so, with one line on standard error and
// the reason on standard output; a user with no CA yet is not given one by uninstall.
func TestCAInstallNothingToDo(t *testing.T) {
	home := t.TempDir()
	data := filepath.Join(home, "data")
	code, out, errOut := runCLI(t, home, "ca", "install", "--system=false", "--data-dir", data)
	if code != 1 || !strings.Contains(out, "nss: skipped: ") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 ||
		!strings.Contains(errOut, "no trust store could be updated") {
		t.Errorf("no NSS database: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, home, "ca", "install", "--system=false", "--nss=false", "--data-dir", data); code != 2 || !strings.Contains(errOut, "nothing to do") {
		t.Errorf("every store off: exit %d, %s; want 2", code, errOut)
	}

	fresh := filepath.Join(home, "fresh")
	code, out, _ = runCLI(t, home, "ca", "uninstall", "--system=false", "--data-dir", fresh)
	if code != 0 || !strings.Contains(out, "nothing to remove") {
		t.Errorf("uninstall without a CA: exit %d, %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(fresh, "ca", "fusou-ca.pem")); err == nil {
		t.Error("uninstall made a CA")
	}
	key := filepath.Join(data, "ca", "fusou-ca-key.pem")
	if code, _, errOut := runCLI(t, home, "ca", "uninstall", "--cert", key, "--data-dir", data); code != 2 || !strings.Contains(errOut, "is not a PEM certificate") {
		t.Errorf("uninstall --cert KEY: exit %d, %s; want 2, refused", code, errOut)
	}
}

// Headless Chromium, whose only trust for the CA comes from `ca install` into its NSS
// database, loads a game page through the proxy.
func TestEndToEndChromiumAfterCAInstall(t *testing.T) {
	chromium := requireTool(t, "chromium")
	certutil := requireTool(t, "certutil")
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	in := startInstance(t, game, api, "")
	newNSSDB(t, certutil, in.home)
	if out := in.cli("", "ca", "install", "--system=false"); !strings.Contains(out, "installed") {
		t.Fatalf("ca install printed:\n%s", out)
	}
	renderGamePage(t, chromium, in.proxyAddr, in.home, userEnv(in.home))
}
