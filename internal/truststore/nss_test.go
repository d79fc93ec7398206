package truststore

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/internal/truststore/nsstest"
)

// requireCertutil finds NSS's certutil; CI installs it (libnss3-tools), so there it must exist.
func requireCertutil(t *testing.T) string {
	t.Helper()
	if os.Getenv("GOOS") == "windows" || filepath.Separator == '\\' {
		t.Skip("NSS's certutil is not used on Windows (Windows' certutil.exe is another program)")
	}
	path, err := exec.LookPath("certutil")
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatal("certutil is not installed, though CI installs libnss3-tools")
	}
	t.Skip("certutil is not installed (apt install libnss3-tools)")
	return ""
}

// Install and uninstall against real NSS databases in a temp home: Chromium's ~/.pki/nssdb
// and a Firefox profile, each checked with certutil itself.
func TestNSSInstallUninstallRealDatabases(t *testing.T) {
	certutil := requireCertutil(t)
	home := t.TempDir()
	chromium := filepath.Join(home, ".pki", "nssdb")
	firefox := filepath.Join(home, ".mozilla", "firefox", "abcd1234.default-release")
	nsstest.NewDB(t, certutil, chromium)
	nsstest.NewDB(t, certutil, firefox)
	if err := os.MkdirAll(filepath.Join(home, ".mozilla", "firefox", "Crash Reports"), 0o700); err != nil {
		t.Fatal(err) // a folder with no database is not a profile
	}
	ca := mustCA(t)
	env := &Env{GOOS: "linux", Home: home}
	nss := Stores{NSS: true}

	want := []string{"nss ~/.pki/nssdb (Chrome, Chromium): installed",
		"nss ~/.mozilla/firefox/abcd1234.default-release (Firefox): installed"}
	if got := outcomes(env.Install(ca, nss)); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("install: %q\nwant %q", got, want)
	}
	for _, db := range []string{chromium, firefox} {
		if flags := nsstest.Trust(t, certutil, db, ca.nickname()); flags != "C,," {
			t.Errorf("%s lists %q with trust %q, want C,,", db, ca.nickname(), flags)
		}
	}
	for _, r := range env.Install(ca, nss) {
		if r.Outcome != AlreadyPresent {
			t.Errorf("second install: %s: %s (%s), want already present", r.Store, r.Outcome, r.Reason)
		}
	}
	for _, r := range env.Uninstall(ca, nss) {
		if r.Outcome != Removed {
			t.Errorf("uninstall: %s: %s (%s), want removed", r.Store, r.Outcome, r.Reason)
		}
	}
	for _, db := range []string{chromium, firefox} {
		if out, err := exec.Command(certutil, "-L", "-d", "sql:"+db, "-n", ca.nickname()).CombinedOutput(); err == nil {
			t.Errorf("%s still holds the CA after uninstall:\n%s", db, out)
		}
	}
	for _, r := range env.Uninstall(ca, nss) {
		if r.Outcome != NotPresent {
			t.Errorf("second uninstall: %s: %s (%s), want not present", r.Store, r.Outcome, r.Reason)
		}
	}
}

// A copy imported untrusted under another name (as a user might by hand) makes certutil
// "succeed" without trusting ours: install says so instead of claiming success.
func TestNSSInstallDetectsCopyUnderAnotherName(t *testing.T) {
	certutil := requireCertutil(t)
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	nsstest.NewDB(t, certutil, db)
	ca := mustCA(t)
	if out, err := exec.Command(certutil, "-A", "-d", "sql:"+db, "-t", ",,", "-n", "imported by hand", "-i", ca.File).CombinedOutput(); err != nil {
		t.Fatalf("certutil -A: %v\n%s", err, out)
	}
	r := only(t, (&Env{GOOS: "linux", Home: home}).Install(ca, Stores{NSS: true}))
	if r.Outcome != Failed || !strings.Contains(r.Reason, "older copy") || !strings.HasPrefix(r.Manual, "certutil -A -d sql:"+db+" -t C,, -n 'fusou-proxy CA ") {
		t.Errorf("got %+v", r)
	}
}

func TestNSSSkips(t *testing.T) {
	ca := mustCA(t)
	t.Run("no database", func(t *testing.T) {
		r := only(t, (&Env{GOOS: "linux", Home: t.TempDir()}).Install(ca, Stores{NSS: true}))
		if r.Outcome != Skipped || !strings.Contains(r.Reason, "start the browser once") {
			t.Errorf("got %+v", r)
		}
	})
	t.Run("no certutil", func(t *testing.T) {
		home := homeWithNSSDB(t)
		for goos, manual := range map[string]string{"linux": "sudo apt install libnss3-tools", "darwin": "brew install nss"} {
			env := &Env{GOOS: goos, Home: home, LookPath: func(string) (string, error) { return "", errors.New("not found") }}
			if goos == "darwin" {
				if err := os.MkdirAll(filepath.Join(home, "Library", "Application Support", "Firefox", "Profiles", "x"), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(home, "Library", "Application Support", "Firefox", "Profiles", "x", "cert9.db"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r := only(t, env.Uninstall(ca, Stores{NSS: true}))
			if r.Outcome != Skipped || !strings.Contains(r.Reason, "certutil") || !strings.HasPrefix(r.Manual, manual) {
				t.Errorf("%s: got %+v", goos, r)
			}
		}
	})
	t.Run("windows", func(t *testing.T) {
		r := only(t, (&Env{GOOS: "windows", Home: t.TempDir()}).Install(ca, Stores{NSS: true}))
		if r.Outcome != Skipped || !strings.Contains(r.Reason, "Windows store") {
			t.Errorf("got %+v", r)
		}
	})
}

// On macOS, Firefox profiles are found under Application Support and given to certutil with
// their spaces intact.
func TestNSSMacOSProfilesCommandLines(t *testing.T) {
	home := t.TempDir()
	profile := filepath.Join(home, "Library", "Application Support", "Firefox", "Profiles", "x.default")
	if err := os.MkdirAll(profile, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(profile, "cert9.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ca := mustCA(t)
	trusted := false
	var args [][]string
	env := &Env{GOOS: "darwin", Home: home,
		LookPath: func(string) (string, error) { return "/opt/homebrew/bin/certutil", nil },
		Run: func(name string, a ...string) ([]byte, error) {
			args = append(args, append([]string{name}, a...))
			switch a[0] {
			case "-V":
				if !trusted {
					return nil, errors.New("exit status 255")
				}
			case "-A":
				trusted = true
			}
			return nil, nil
		}}
	r := only(t, env.Install(ca, Stores{NSS: true}))
	if r.Outcome != Installed || len(args) != 3 {
		t.Fatalf("got %+v after %q", r, args)
	}
	want := []string{"/opt/homebrew/bin/certutil", "-A", "-d", "sql:" + profile, "-t", "C,,", "-n", ca.nickname(), "-i", ca.File}
	if strings.Join(args[1], "|") != strings.Join(want, "|") {
		t.Errorf("certutil -A ran as %q, want %q", args[1], want)
	}
}
