package truststore

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/certs"
)

// mustCA makes a real fusou-proxy CA in a temp folder; only its public PEM file is used.
func mustCA(tb testing.TB) CA {
	tb.Helper()
	a, err := certs.Open(certs.Options{Dir: filepath.Join(tb.TempDir(), "ca")})
	if err != nil {
		tb.Fatal(err)
	}
	return CA{Cert: a.Certificate(), File: filepath.Join(a.Dir(), certs.CertFile)}
}

// outcomes lists "store: outcome" for a failure message and a comparison.
func outcomes(rs []Result) []string {
	var s []string
	for _, r := range rs {
		s = append(s, r.Store+": "+r.Outcome.String())
	}
	return s
}

// only returns the one result, failing the test if there is not exactly one.
func only(t *testing.T, rs []Result) Result {
	t.Helper()
	if len(rs) != 1 {
		t.Fatalf("got %d results %q, want 1", len(rs), outcomes(rs))
	}
	return rs[0]
}

// homeWithNSSDB is a home folder whose ~/.pki/nssdb looks like a browser's NSS database to the
// search (its cert9.db is empty), for the tests that fake certutil.
func homeWithNSSDB(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(db, "cert9.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return home
}

// cycle runs the first n steps of installing ca into stores twice, then uninstalling it twice,
// and checks each step's one result: installed, already present, removed, not present; and, if
// store is not "", the store it names.
func cycle(t *testing.T, env *Env, ca CA, stores Stores, store string, n int) {
	t.Helper()
	steps := []struct {
		do   func(CA, Stores) []Result
		want Outcome
	}{{env.Install, Installed}, {env.Install, AlreadyPresent}, {env.Uninstall, Removed}, {env.Uninstall, NotPresent}}
	for i, s := range steps[:n] {
		if r := only(t, s.do(ca, stores)); r.Outcome != s.want || (store != "" && r.Store != store) {
			t.Fatalf("step %d: %+v, want %s", i, r, s.want)
		}
	}
}

// recorder is a fake command runner that records each command line and answers with answer.
type recorder struct {
	calls  []string
	answer func(name string, args []string) ([]byte, error)
}

func (r *recorder) run(name string, args ...string) ([]byte, error) {
	r.calls = append(r.calls, strings.Join(append([]string{name}, args...), " "))
	if r.answer == nil {
		return nil, nil
	}
	return r.answer(name, args)
}

// Each Linux distribution's CA folder: an ordinary user is told the exact sudo commands and
// nothing is written; root gets the file written and the distribution's rebuild command run;
// a second install finds it present; uninstall removes it and is idempotent.
func TestLinuxSystemStore(t *testing.T) {
	ca := mustCA(t)
	base := strings.ReplaceAll(ca.nickname(), " ", "-")
	for _, c := range []struct{ dir, file, update string }{
		{"/usr/local/share/ca-certificates", base + ".crt", "update-ca-certificates"},
		{"/etc/pki/ca-trust/source/anchors", base + ".pem", "update-ca-trust extract"},
		{"/etc/ca-certificates/trust-source/anchors", base + ".crt", "trust extract-compat"},
	} {
		t.Run(c.dir, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, c.dir), 0o755); err != nil {
				t.Fatal(err)
			}
			admin := false
			rec := &recorder{}
			env := &Env{GOOS: "linux", Root: root, Home: t.TempDir(), Run: rec.run, Admin: func() bool { return admin }}
			sys := Stores{System: true}
			target := filepath.Join(root, c.dir, c.file)

			r := only(t, env.Install(ca, sys))
			wantManual := "sudo cp " + env.quote(ca.File) + " " + c.dir + "/" + c.file + " && sudo " + c.update
			if r.Outcome != Skipped || !strings.Contains(r.Reason, "needs administrator rights") || r.Manual != wantManual {
				t.Errorf("as a user: %+v\nwant skipped (needs administrator rights) with manual %q", r, wantManual)
			}
			if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) || len(rec.calls) != 0 {
				t.Fatalf("a user's install wrote %s (%v) or ran %q", target, err, rec.calls)
			}

			admin = true
			if r := only(t, env.Install(ca, sys)); r.Outcome != Installed {
				t.Fatalf("as root: %+v, want installed", r)
			}
			got, _ := os.ReadFile(target)
			want, _ := os.ReadFile(ca.File)
			if len(want) == 0 || string(got) != string(want) {
				t.Errorf("%s holds %q, want the CA's PEM", target, got)
			}
			if !slices.Equal(rec.calls, []string{c.update}) {
				t.Errorf("ran %q, want %q", rec.calls, c.update)
			}
			if r := only(t, env.Install(ca, sys)); r.Outcome != AlreadyPresent || len(rec.calls) != 1 {
				t.Errorf("second install: %+v, ran %q; want already present and nothing run", r, rec.calls)
			}

			admin = false
			r = only(t, env.Uninstall(ca, sys))
			if r.Outcome != Skipped || r.Manual != "sudo rm -f "+c.dir+"/"+c.file+" && sudo "+c.update {
				t.Errorf("a user's uninstall: %+v", r)
			}
			admin = true
			if r := only(t, env.Uninstall(ca, sys)); r.Outcome != Removed {
				t.Errorf("root's uninstall: %+v, want removed", r)
			}
			if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) || len(rec.calls) != 2 {
				t.Errorf("after uninstall: %s %v, ran %q", target, err, rec.calls)
			}
			admin = false // nothing to remove needs no root
			if r := only(t, env.Uninstall(ca, sys)); r.Outcome != NotPresent {
				t.Errorf("uninstall again: %+v, want not present", r)
			}
		})
	}
}

// A failing rebuild command is reported with its own first line of output and the manual step.
func TestLinuxSystemStoreUpdateFails(t *testing.T) {
	ca := mustCA(t)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr/local/share/ca-certificates"), 0o755); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{answer: func(string, []string) ([]byte, error) {
		return []byte("update-ca-certificates: disk full\nmore"), errors.New("exit status 1")
	}}
	env := &Env{GOOS: "linux", Root: root, Run: rec.run, Admin: func() bool { return true }}
	r := only(t, env.Install(ca, Stores{System: true}))
	if r.Outcome != Failed || r.Reason != "update-ca-certificates: disk full" || !strings.HasPrefix(r.Manual, "sudo cp ") {
		t.Errorf("got %+v", r)
	}
}

func TestLinuxWithoutCAFolderIsSkipped(t *testing.T) {
	env := &Env{GOOS: "linux", Root: t.TempDir(), Admin: func() bool { return true }}
	r := only(t, env.Install(mustCA(t), Stores{System: true}))
	if r.Outcome != Skipped || !strings.Contains(r.Reason, "no known system CA folder") {
		t.Errorf("got %+v", r)
	}
}

// Paths with spaces (macOS's "Application Support") survive being pasted into a shell.
func TestQuote(t *testing.T) {
	posix, win := &Env{GOOS: "linux"}, &Env{GOOS: "windows"}
	for in, want := range map[string]string{
		"/home/u/ca.pem": "/home/u/ca.pem",
		"/Users/u/Library/Application Support/x.pem": "'/Users/u/Library/Application Support/x.pem'",
		"it's": `'it'\''s'`,
		"":     "''",
	} {
		if got := posix.quote(in); got != want {
			t.Errorf("posix quote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := win.quote(`C:\Users\A B\ca.pem`); got != `"C:\Users\A B\ca.pem"` {
		t.Errorf("windows quote = %s", got)
	}
}

func TestNoStoresSelectedDoesNothing(t *testing.T) {
	rec := &recorder{}
	env := &Env{GOOS: "linux", Root: t.TempDir(), Home: t.TempDir(), Run: rec.run}
	if rs := env.Install(mustCA(t), Stores{}); len(rs) != 0 || len(rec.calls) != 0 {
		t.Errorf("got %q, ran %q", outcomes(rs), rec.calls)
	}
}

func TestUnknownOSSystemStoreIsSkipped(t *testing.T) {
	r := only(t, (&Env{GOOS: "plan9"}).Install(mustCA(t), Stores{System: true}))
	if r.Outcome != Skipped || !strings.Contains(r.Reason, "plan9") {
		t.Errorf("got %+v", r)
	}
}

// Results come in the order system, NSS, Java, whether a store was used or skipped.
func TestResultsInStoreOrder(t *testing.T) {
	t.Setenv("JAVA_HOME", "")
	home := homeWithNSSDB(t)
	env := &Env{GOOS: "linux", Root: t.TempDir(), Home: home,
		LookPath: func(string) (string, error) { return "certutil", nil },
		Run: func(string, ...string) ([]byte, error) {
			return []byte("certutil: could not find certificate named x"), errors.New("exit status 255")
		}}
	got := outcomes(env.Uninstall(mustCA(t), Stores{System: true, NSS: true, Java: true}))
	want := []string{"system: skipped", "nss " + filepath.FromSlash("~/.pki/nssdb") + " (Chrome, Chromium): not present", "java: skipped"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
