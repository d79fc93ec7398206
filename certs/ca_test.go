package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/internal/atomicfile"
	"github.com/fusou-proxy/fusou-proxy/internal/private/privatetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// mustOpen opens (creating) a CA in a fresh temp folder, or in o.Dir when it is set.
func mustOpen(tb testing.TB, o Options) *Authority {
	tb.Helper()
	if o.Dir == "" {
		o.Dir = filepath.Join(tb.TempDir(), "ca")
	}
	a, err := Open(o)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	return a
}

func mustReadFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// wantMode checks a file's Unix mode; mode bits mean nothing on Windows, so there it checks
// nothing (the public certificate files are what is left for it).
func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	if runtime.GOOS == "windows" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", filepath.Base(path), got, want)
	}
}

// wantPrivateDir checks that a folder is private, in a subtest skipped under wine, which
// cannot make a folder private (limit names the reason).
func wantPrivateDir(t *testing.T, dir, limit string) {
	t.Helper()
	t.Run("private "+filepath.Base(dir), func(t *testing.T) {
		privatetest.SkipUnderWine(t, limit)
		privatetest.WantPrivate(t, dir)
	})
}

// wantRotate asserts err is a *RotateRequiredError whose message tells the user what to run.
func wantRotate(t *testing.T, err error, about string) *RotateRequiredError {
	t.Helper()
	var re *RotateRequiredError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T), want a *RotateRequiredError", err, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "fusou-proxy ca rotate") || !strings.Contains(msg, about) {
		t.Errorf("error %q should mention %q and `fusou-proxy ca rotate`", msg, about)
	}
	return re
}

func TestOpen_CreatesCA(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data", "ca")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := mustOpen(t, Options{Dir: dir, Now: func() time.Time { return now }})

	wantPrivateDir(t, dir, privatetest.WineNamedMergesParent)
	wantMode(t, dir, 0o700)
	privatetest.WantPrivate(t, filepath.Join(dir, KeyFile))
	wantMode(t, filepath.Join(dir, KeyFile), 0o600)
	wantMode(t, filepath.Join(dir, CertFile), 0o644)
	wantMode(t, filepath.Join(dir, CertDERFile), 0o644)

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{KeyFile, CertDERFile, CertFile}; !slices.Equal(names, want) {
		t.Errorf("ca folder holds %v, want %v", names, want)
	}

	if !bytes.Equal(mustReadFile(t, filepath.Join(dir, CertFile)), a.PEM()) {
		t.Error("fusou-ca.pem differs from PEM()")
	}
	if !bytes.Equal(mustReadFile(t, filepath.Join(dir, CertDERFile)), a.DER()) {
		t.Error("fusou-ca.der differs from DER()")
	}
	block, _ := pem.Decode(a.PEM())
	if block == nil || !bytes.Equal(block.Bytes, a.DER()) {
		t.Error("PEM() does not hold DER()")
	}

	c := a.Certificate()
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("ca key is %T, want ecdsa p-256", c.PublicKey)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: IsCA=%v valid=%v maxPathLen=%d zero=%v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %v", c.KeyUsage)
	}
	if !slices.Equal(c.PermittedDNSDomains, DefaultHosts) {
		t.Errorf("permitted %v, want %v", c.PermittedDNSDomains, DefaultHosts)
	}
	var excluded []string
	for _, n := range c.ExcludedIPRanges {
		excluded = append(excluded, n.String())
	}
	if want := []string{"0.0.0.0/0", "::/0"}; !slices.Equal(excluded, want) {
		t.Errorf("excluded ip ranges %v, want %v", excluded, want)
	}
	nameConstraints := asn1.ObjectIdentifier{2, 5, 29, 30}
	critical := false
	for _, ext := range c.Extensions {
		if ext.Id.Equal(nameConstraints) {
			critical = ext.Critical
		}
	}
	if !critical {
		t.Error("name constraints extension missing or not critical")
	}
	if !c.NotBefore.Before(now) || !c.NotAfter.Equal(c.NotBefore.AddDate(10, 0, 0)) {
		t.Errorf("validity %v to %v, want 10 years from just before %v", c.NotBefore, c.NotAfter, now)
	}
	if !strings.HasPrefix(c.Subject.CommonName, "fusou-proxy CA ") || len(c.Subject.CommonName) <= len("fusou-proxy CA ") {
		t.Errorf("subject %q is not a unique fusou-proxy CA name", c.Subject.CommonName)
	}
	// Two installs (or a rotation) must not share a subject.
	b := mustOpen(t, Options{})
	if b.Certificate().Subject.CommonName == c.Subject.CommonName {
		t.Errorf("two CAs share the subject %q", c.Subject.CommonName)
	}
}

func TestOpen_ReopenLoadsSameCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a := mustOpen(t, Options{Dir: dir})
	b := mustOpen(t, Options{Dir: dir})
	if !bytes.Equal(a.DER(), b.DER()) {
		t.Fatal("reopen made a different CA")
	}
	if !b.root.Load().key.Equal(a.root.Load().key) {
		t.Fatal("reopen loaded a different key")
	}
	// A mitm host that is a subdomain of the CA's domain is covered without a rotation.
	c := mustOpen(t, Options{Dir: dir, Hosts: []string{"w01y.kancolle-server.com"}})
	if !bytes.Equal(a.DER(), c.DER()) {
		t.Fatal("a covered subdomain host changed the CA")
	}
}

func TestOpen_HostsOutgrowCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a := mustOpen(t, Options{Dir: dir})

	_, err := Open(Options{Dir: dir, Hosts: []string{"kancolle-server.com", "Example.org"}})
	re := wantRotate(t, err, "example.org")
	if !slices.Equal(re.Hosts, []string{"example.org"}) {
		t.Errorf("uncovered hosts %v, want [example.org]", re.Hosts)
	}
	// The refusal must not touch the files: the user's trust store still holds this CA.
	if !bytes.Equal(mustReadFile(t, filepath.Join(dir, CertDERFile)), a.DER()) {
		t.Error("a refused open changed the CA files")
	}
}

func TestOpen_CorruptFiles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		about  string
	}{
		{"garbage key", func(t *testing.T, dir string) {
			writeTestFile(t, filepath.Join(dir, KeyFile), []byte("not a key"))
		}, KeyFile},
		{"truncated key", func(t *testing.T, dir string) {
			b := mustReadFile(t, filepath.Join(dir, KeyFile))
			block, _ := pem.Decode(b)
			block.Bytes = block.Bytes[:len(block.Bytes)/2]
			writeTestFile(t, filepath.Join(dir, KeyFile), pem.EncodeToMemory(block))
		}, KeyFile},
		{"missing key", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, KeyFile)); err != nil {
				t.Fatal(err)
			}
		}, KeyFile},
		{"another CA's key", func(t *testing.T, dir string) {
			other := filepath.Join(t.TempDir(), "ca")
			mustOpen(t, Options{Dir: other})
			writeTestFile(t, filepath.Join(dir, KeyFile), mustReadFile(t, filepath.Join(other, KeyFile)))
		}, "does not match"},
		{"garbage certificate", func(t *testing.T, dir string) {
			writeTestFile(t, filepath.Join(dir, CertFile), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
		}, CertFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ca")
			mustOpen(t, Options{Dir: dir})
			tc.damage(t, dir)
			_, err := Open(Options{Dir: dir})
			wantRotate(t, err, tc.about)

			// Rotate is the way out: it works whatever state the old files are in.
			a, err := Rotate(Options{Dir: dir})
			if err != nil {
				t.Fatalf("rotate: %v", err)
			}
			b := mustOpen(t, Options{Dir: dir})
			if !bytes.Equal(a.DER(), b.DER()) {
				t.Error("open after rotate did not load the rotated CA")
			}
		})
	}
}

func TestOpen_Expired(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	mustOpen(t, Options{Dir: dir})
	later := time.Now().AddDate(11, 0, 0)
	_, err := Open(Options{Dir: dir, Now: func() time.Time { return later }})
	wantRotate(t, err, "expired")
}

func TestOpen_RepairsDerivedState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a := mustOpen(t, Options{Dir: dir})

	// A crash inside atomicfile.WriteFile leaves a temp file that may hold key bytes.
	tmp := filepath.Join(dir, "."+KeyFile+atomicfile.TempMarker+"123")
	writeTestFile(t, tmp, []byte("partial"))
	// The DER copy is derived from the PEM file; a stale one is rewritten.
	writeTestFile(t, filepath.Join(dir, CertDERFile), []byte("stale"))
	privatetest.Expose(t, filepath.Join(dir, KeyFile))
	privatetest.Expose(t, dir)

	core, logs := observer.New(zap.WarnLevel)
	b := mustOpen(t, Options{Dir: dir, Logger: zap.New(core)})
	if logs.FilterMessageSnippet("CA key file was readable by other users").Len() != 1 {
		t.Errorf("no warning about the exposed key in %v", logs.All())
	}
	if !bytes.Equal(a.DER(), b.DER()) {
		t.Fatal("reopen made a different CA")
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temp file left behind: %v", err)
	}
	if !bytes.Equal(mustReadFile(t, filepath.Join(dir, CertDERFile)), a.DER()) {
		t.Error("stale DER file not rewritten")
	}
	privatetest.WantPrivate(t, filepath.Join(dir, KeyFile))
	wantMode(t, filepath.Join(dir, KeyFile), 0o600)
	wantPrivateDir(t, dir, privatetest.WineNamedMergesParent)
	wantMode(t, dir, 0o700)
}

func TestOpen_IncompleteCAKeptAside(t *testing.T) {
	// A crash while a CA was first written leaves a key but no certificate (the PEM file
	// goes last). Open makes a new CA and keeps the stray key aside rather than deleting it.
	dir := filepath.Join(t.TempDir(), "ca")
	mustOpen(t, Options{Dir: dir})
	strayKey := mustReadFile(t, filepath.Join(dir, KeyFile))
	if err := os.Remove(filepath.Join(dir, CertFile)); err != nil {
		t.Fatal(err)
	}

	mustOpen(t, Options{Dir: dir})
	olds, _ := filepath.Glob(filepath.Join(dir, "old-*", KeyFile))
	if len(olds) != 1 || !bytes.Equal(mustReadFile(t, olds[0]), strayKey) {
		t.Fatalf("stray key not kept aside: %v", olds)
	}
	if bytes.Equal(mustReadFile(t, filepath.Join(dir, KeyFile)), strayKey) {
		t.Error("new CA reuses the stray key")
	}
	if _, err := os.Stat(filepath.Join(dir, CertFile)); err != nil {
		t.Errorf("new CA not written: %v", err)
	}
}

func TestRotate_KeepsOldFilesAside(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	first := mustOpen(t, Options{Dir: dir, Now: clock})
	oldFiles := map[string][]byte{}
	for _, name := range []string{CertFile, CertDERFile, KeyFile} {
		oldFiles[name] = mustReadFile(t, filepath.Join(dir, name))
	}
	leaf, err := first.LeafFor("kancolle-server.com")
	if err != nil {
		t.Fatal(err)
	}

	hosts := []string{"kancolle-server.com", "example.org"}
	second, err := Rotate(Options{Dir: dir, Hosts: hosts, Now: clock})
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if bytes.Equal(second.DER(), first.DER()) {
		t.Fatal("rotate kept the same CA")
	}
	if !second.Covers("www.example.org") {
		t.Error("rotated CA does not cover the new mitm host")
	}
	if st := second.Stats(); st.Cached != 0 || st.Generations != 0 {
		t.Errorf("rotated authority starts with cache %+v, want empty", st)
	}
	got, err := second.LeafFor("kancolle-server.com")
	if err != nil {
		t.Fatal(err)
	}
	if got == leaf {
		t.Error("rotated authority served a leaf of the old CA")
	}

	oldDir := filepath.Join(dir, "old-20260301T120000Z")
	// On Windows the folder is private by inheriting the CA folder's ACL.
	wantPrivateDir(t, oldDir, privatetest.WineNoDescriptors)
	wantMode(t, oldDir, 0o700)
	for name, want := range oldFiles {
		if !bytes.Equal(mustReadFile(t, filepath.Join(oldDir, name)), want) {
			t.Errorf("old %s not kept aside intact", name)
		}
	}
	privatetest.WantPrivate(t, filepath.Join(oldDir, KeyFile))
	wantMode(t, filepath.Join(oldDir, KeyFile), 0o600)

	// A second rotation in the same second must not overwrite the first one's backup.
	third, err := Rotate(Options{Dir: dir, Hosts: hosts, Now: clock})
	if err != nil {
		t.Fatalf("rotate again: %v", err)
	}
	if !bytes.Equal(mustReadFile(t, filepath.Join(oldDir, CertDERFile)), first.DER()) {
		t.Error("second rotation overwrote the first backup")
	}
	if !bytes.Equal(mustReadFile(t, filepath.Join(oldDir+"-2", CertDERFile)), second.DER()) {
		t.Error("second rotation did not keep the second CA aside")
	}

	// The new CA is what the next start loads, and it now accepts the wider host list.
	again := mustOpen(t, Options{Dir: dir, Hosts: hosts})
	if !bytes.Equal(again.DER(), third.DER()) {
		t.Error("open did not load the latest rotated CA")
	}
}

func TestOptions_Hosts(t *testing.T) {
	a := mustOpen(t, Options{Hosts: []string{"Kancolle-Server.com", "w01y.kancolle-server.com", "kancolle-server.com.", "b.example"}})
	if want := []string{"b.example", "kancolle-server.com"}; !slices.Equal(a.Certificate().PermittedDNSDomains, want) {
		t.Errorf("permitted %v, want %v", a.Certificate().PermittedDNSDomains, want)
	}
	for _, tc := range []struct {
		hosts []string
		want  error
	}{
		{[]string{"203.0.113.7"}, ErrIPHost},
		{[]string{"*.kancolle-server.com"}, ErrInvalidHost},
		{[]string{""}, ErrInvalidHost},
	} {
		_, err := Open(Options{Dir: filepath.Join(t.TempDir(), "ca"), Hosts: tc.hosts})
		if !errors.Is(err, tc.want) {
			t.Errorf("hosts %q: error %v, want %v", tc.hosts, err, tc.want)
		}
	}
	if _, err := Open(Options{}); err == nil {
		t.Error("open with no folder succeeded")
	}
}

func TestKeyNeverLogged(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	o := Options{Dir: filepath.Join(t.TempDir(), "ca"), Logger: zap.New(core)}
	mustOpen(t, o)
	mustOpen(t, o)
	privatetest.Expose(t, filepath.Join(o.Dir, KeyFile))
	mustOpen(t, o)
	a, err := Rotate(o)
	if err != nil {
		t.Fatal(err)
	}
	if logs.Len() < 3 {
		t.Fatalf("only %d log lines; the test is not looking at anything", logs.Len())
	}
	block, _ := pem.Decode(mustReadFile(t, filepath.Join(o.Dir, KeyFile)))
	raw, err := a.root.Load().key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	secret := fmt.Sprintf("%x", raw)
	keyB64 := strings.Split(string(mustReadFile(t, filepath.Join(o.Dir, KeyFile))), "\n")[1]
	for _, e := range logs.All() {
		line := fmt.Sprint(e.Message, e.ContextMap())
		for _, s := range []string{"PRIVATE", secret, string(raw), keyB64, string(block.Bytes)} {
			if strings.Contains(line, s) {
				t.Errorf("log line %q contains key material", e.Message)
			}
		}
	}
}

func writeTestFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
