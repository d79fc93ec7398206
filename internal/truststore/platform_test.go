package truststore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// fakeSecurity plays macOS's security tool over one login keychain.
type fakeSecurity struct {
	t        *testing.T
	keychain string
	ca       CA
	present  bool
	addOut   string // when set, add-trusted-cert fails with this output
}

func (f *fakeSecurity) run(name string, args ...string) ([]byte, error) {
	f.t.Helper()
	notFound := []byte("security: SecKeychainSearchCopyNext: The specified item could not be found in the keychain.")
	if name != "security" {
		f.t.Fatalf("ran %s, want security", name)
	}
	line := strings.Join(args, " ")
	switch {
	case line == "find-certificate -a -Z -c "+f.ca.nickname()+" "+f.keychain:
		if !f.present {
			return notFound, errors.New("exit status 44")
		}
		return []byte("SHA-256 hash: 00\nSHA-1 hash: " + f.ca.sha1Hex() + "\nkeychain: \"" + f.keychain + "\"\n"), nil
	case line == "add-trusted-cert -r trustRoot -k "+f.keychain+" "+f.ca.File:
		if f.addOut != "" {
			return []byte(f.addOut), errors.New("exit status 1")
		}
		f.present = true
	case line == "remove-trusted-cert "+f.ca.File:
	case line == "delete-certificate -Z "+f.ca.sha1Hex()+" "+f.keychain:
		f.present = false
	default:
		f.t.Fatalf("unexpected command: security %s", line)
	}
	return nil, nil
}

// The macOS login keychain, through a fake security tool: the command lines, idempotence, and
// the two ways a password prompt is refused turned into what to do.
func TestMacOSKeychain(t *testing.T) {
	ca := mustCA(t)
	home := filepath.Join(t.TempDir(), "Jane Doe")
	f := &fakeSecurity{t: t, ca: ca, keychain: filepath.Join(home, "Library", "Keychains", "login.keychain-db")}
	env := &Env{GOOS: "darwin", Home: home, Run: f.run}
	sys := Stores{System: true}

	cycle(t, env, ca, sys, "system (macOS login keychain)", 4)

	for _, c := range []struct{ out, reason string }{
		{"SecTrustSettingsSetTrustSettings: The authorization was canceled by the user.", "password prompt was cancelled"},
		{"SecTrustSettingsSetTrustSettings: The authorization was denied since no user interaction was possible.", "run this in Terminal on the Mac itself"},
		{"SecCertificateAddToKeychain: Write permissions error.", "security: SecCertificateAddToKeychain: Write permissions error."},
	} {
		f.addOut = c.out
		r := only(t, env.Install(ca, sys))
		wantManual := "security add-trusted-cert -r trustRoot -k '" + f.keychain + "' " + env.quote(ca.File)
		if r.Outcome != Failed || !strings.Contains(r.Reason, c.reason) || r.Manual != wantManual {
			t.Errorf("%q: got %+v\nwant failed, %q, manual %s", c.out, r, c.reason, wantManual)
		}
	}
}

// fakeRoot is an in-memory Windows store.
type fakeRoot struct {
	certs  [][]byte
	addErr error
	closed int
}

var _ certStore = (*fakeRoot)(nil)

func (f *fakeRoot) contains(der []byte) (bool, error) {
	for _, c := range f.certs {
		if bytes.Equal(c, der) {
			return true, nil
		}
	}
	return false, nil
}

func (f *fakeRoot) add(der []byte) error {
	if f.addErr != nil {
		return f.addErr
	}
	f.certs = append(f.certs, der)
	return nil
}

func (f *fakeRoot) remove(der []byte) (int, error) {
	n := len(f.certs)
	f.certs = slices.DeleteFunc(f.certs, func(c []byte) bool { return bytes.Equal(c, der) })
	return n - len(f.certs), nil
}

func (f *fakeRoot) close() error { f.closed++; return nil }

// The Windows CurrentUser Root store, through a fake store: idempotence, the store closed
// after each use, and the user's No in the confirmation dialog turned into what to do.
func TestWindowsRoot(t *testing.T) {
	ca := mustCA(t)
	f := &fakeRoot{}
	env := &Env{GOOS: "windows", openWindowsRoot: func() (certStore, error) { return f, nil }}
	sys := Stores{System: true}
	cycle(t, env, ca, sys, "system (Windows CurrentUser Root)", 4)
	if f.closed != 6 { // install: check, add, check; again: check; uninstall twice
		t.Errorf("store closed %d times, want 6", f.closed)
	}

	for _, no := range []error{syscall.Errno(1223), syscall.Errno(0x800704C7)} {
		f.addErr = no
		r := only(t, env.Install(ca, sys))
		if r.Outcome != Failed || !strings.Contains(r.Reason, "answered No") || r.Manual != `certutil -user -addstore Root "`+ca.File+`"` {
			t.Errorf("%v: got %+v", no, r)
		}
	}
	f.addErr = errors.New("access denied")
	if r := only(t, env.Install(ca, sys)); r.Outcome != Failed || r.Reason != "access denied" {
		t.Errorf("got %+v", r)
	}

	env.openWindowsRoot = func() (certStore, error) { return nil, errors.New("no store") }
	r := only(t, env.Uninstall(ca, sys))
	if r.Outcome != Failed || r.Reason != "open the CurrentUser Root store: no store" || r.Manual != "certutil -user -delstore Root "+ca.sha1Hex() {
		t.Errorf("got %+v", r)
	}
}

// Java's cacerts, through a fake keytool: the command lines and idempotence.
func TestJavaKeystore(t *testing.T) {
	ca := mustCA(t)
	javaHome := t.TempDir()
	keytool := filepath.Join(javaHome, "bin", "keytool")
	cacerts := filepath.Join(javaHome, "lib", "security", "cacerts")
	for _, p := range []string{keytool, cacerts} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	present := false
	tail := " -keystore " + cacerts + " -storepass changeit -alias " + ca.nickname()
	env := &Env{GOOS: "linux", JavaHome: javaHome, Run: func(name string, args ...string) ([]byte, error) {
		if name != keytool {
			t.Fatalf("ran %s", name)
		}
		switch line := strings.Join(args, " "); line {
		case "-list" + tail:
			if !present {
				return []byte("keytool error: java.lang.Exception: Alias <x> does not exist"), errors.New("exit status 1")
			}
		case "-importcert -noprompt -file " + ca.File + tail:
			present = true
		case "-delete" + tail:
			present = false
		default:
			t.Fatalf("unexpected keytool %s", line)
		}
		return nil, nil
	}}
	java := Stores{Java: true}
	cycle(t, env, ca, java, "", 4)

	if r := only(t, (&Env{JavaHome: t.TempDir()}).Install(ca, java)); r.Outcome != Skipped || !strings.Contains(r.Reason, "bin/keytool") {
		t.Errorf("a JAVA_HOME without keytool: %+v", r)
	}
	t.Setenv("JAVA_HOME", "")
	if r := only(t, (&Env{}).Install(ca, java)); r.Outcome != Skipped || !strings.Contains(r.Reason, "JAVA_HOME is not set") {
		t.Errorf("no JAVA_HOME: %+v", r)
	}
}
