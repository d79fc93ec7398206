package truststore

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// nssTrust is the trust NSS gives a CA allowed to issue server certificates: "C" for TLS,
// nothing for e-mail or code signing.
const nssTrust = "C,,"

// nssDirs are where browsers keep NSS databases, relative to the home folder, per OS.
// Firefox has one per profile; Chrome and Chromium on Linux share ~/.pki/nssdb. Snap and
// Flatpak builds keep theirs inside their sandbox.
var nssDirs = map[string][]string{
	"linux": {
		".pki/nssdb",
		"snap/chromium/current/.pki/nssdb",
		".mozilla/firefox/*",
		"snap/firefox/common/.mozilla/firefox/*",
		".var/app/org.mozilla.firefox/.mozilla/firefox/*",
	},
	"darwin": {"Library/Application Support/Firefox/Profiles/*"},
}

// certutilPaths are Homebrew's certutil (brew install nss), tried when it is not on PATH.
var certutilPaths = []string{"/opt/homebrew/opt/nss/bin/certutil", "/usr/local/opt/nss/bin/certutil"}

// nssStores finds the NSS databases in the home folder and the certutil that edits them.
func (e *Env) nssStores() ([]store, []Result) {
	skip := func(reason, manual string) ([]store, []Result) {
		return nil, []Result{{Store: "nss", Outcome: Skipped, Reason: reason, Manual: manual}}
	}
	goos := e.goos()
	if goos == "windows" {
		// Windows' own certutil.exe is a different program, and NSS's is not shipped.
		return skip("Firefox 120 and later trust the Windows store; for an older Firefox, import the CA in Settings > Privacy & Security > Certificates", "")
	}
	patterns, ok := nssDirs[goos]
	if !ok {
		patterns = nssDirs["linux"]
	}
	var dbs []string
	for _, p := range patterns {
		matches, _ := filepath.Glob(filepath.Join(e.home(), filepath.FromSlash(p)))
		for _, dir := range matches {
			if db := nssDBName(dir); db != "" {
				dbs = append(dbs, db)
			}
		}
	}
	if len(dbs) == 0 {
		return skip("no browser NSS database in "+e.tilde(e.home())+" (Firefox makes one per profile, Chrome and Chromium on Linux make ~/.pki/nssdb): start the browser once, then run this again", "")
	}
	certutil, err := e.certutil()
	if err != nil {
		help := "sudo apt install libnss3-tools  (Fedora: sudo dnf install nss-tools)"
		if goos == "darwin" {
			help = "brew install nss"
		}
		return skip("certutil, which edits browsers' NSS databases, is not installed; install it and run this again", help)
	}
	stores := make([]store, len(dbs))
	for i, db := range dbs {
		stores[i] = &nssDB{env: e, certutil: certutil, db: db}
	}
	return stores, nil
}

// nssDBName is certutil's name for the database in dir ("sql:" for cert9.db, "dbm:" for the
// legacy cert8.db), or "" if dir holds none.
func nssDBName(dir string) string {
	if _, err := os.Stat(filepath.Join(dir, "cert9.db")); err == nil {
		return "sql:" + dir
	}
	if _, err := os.Stat(filepath.Join(dir, "cert8.db")); err == nil {
		return "dbm:" + dir
	}
	return ""
}

func (e *Env) certutil() (string, error) {
	path, err := e.lookPath("certutil")
	if err == nil || e.goos() != "darwin" {
		return path, err
	}
	for _, p := range certutilPaths {
		if _, statErr := os.Stat(p); statErr == nil {
			return p, nil
		}
	}
	return "", err
}

// nssDB is one NSS database, changed with certutil.
type nssDB struct {
	env      *Env
	certutil string
	db       string // "sql:/home/u/.pki/nssdb"
}

func (s *nssDB) dir() string { return s.db[strings.Index(s.db, ":")+1:] }

func (s *nssDB) name() string {
	browser := "Chrome, Chromium"
	if strings.Contains(strings.ToLower(s.dir()), "firefox") {
		browser = "Firefox"
	}
	return fmt.Sprintf("nss %s (%s)", s.env.tilde(s.dir()), browser)
}

// trusts asks certutil to verify the CA as a TLS issuer (-u L), which needs the trust flags.
func (s *nssDB) trusts(ca CA) (bool, error) {
	_, err := s.env.run(s.certutil, "-V", "-d", s.db, "-u", "L", "-n", ca.nickname())
	return err == nil, nil
}

func (s *nssDB) add(ca CA) error {
	out, err := s.env.run(s.certutil, "-A", "-d", s.db, "-t", nssTrust, "-n", ca.nickname(), "-i", ca.File)
	if err != nil {
		return cmdError("certutil", out, err)
	}
	return nil
}

// remove deletes every entry with the CA's nickname (certutil -D deletes one at a time).
func (s *nssDB) remove(ca CA) (bool, error) {
	removed := false
	for range 10 {
		out, err := s.env.run(s.certutil, "-L", "-d", s.db, "-n", ca.nickname())
		if err != nil {
			// certutil words this "could not find certificate named …" or, after a
			// deletion, "Could not find cert: …".
			if strings.Contains(strings.ToLower(string(out)), "could not find cert") {
				return removed, nil
			}
			return removed, cmdError("certutil", out, err)
		}
		if out, err := s.env.run(s.certutil, "-D", "-d", s.db, "-n", ca.nickname()); err != nil {
			return removed, cmdError("certutil", out, err)
		}
		removed = true
	}
	return removed, fmt.Errorf("certutil: %q is still listed after 10 deletions", ca.nickname())
}

func (s *nssDB) manual(ca CA, add bool) string {
	q := s.env.quote
	if add {
		return fmt.Sprintf("certutil -A -d %s -t %s -n %s -i %s", q(s.db), nssTrust, q(ca.nickname()), q(ca.File))
	}
	return fmt.Sprintf("certutil -D -d %s -n %s", q(s.db), q(ca.nickname()))
}
