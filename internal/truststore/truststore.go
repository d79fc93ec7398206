// Package truststore adds fusou-proxy's root CA to the places that decide what a browser
// trusts, and removes it again: the OS store, the NSS databases of Firefox (and of Chrome and
// Chromium on Linux), and optionally a Java runtime. It follows mkcert's approach (certutil for
// NSS, the OS's own tools or API for the system store) but reports each store separately, so a
// user sees what was done, what was skipped and why, and the exact command to do the rest by
// hand.
//
// Start with [Env.Install] and [Env.Uninstall]. The zero [Env] is this machine and user; its
// fields are seams that tests point at a temporary home, a temporary filesystem root, a fake
// command runner or a fake Windows store.
//
// Only the public certificate is ever handled here: stores are given the CA's PEM file, never
// its key.
package truststore

import (
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// ErrNeedsAdmin is wrapped by a store that could not be changed without administrator
// (root) rights. The store is reported as skipped, with the command to run as an admin.
var ErrNeedsAdmin = errors.New("needs administrator rights")

// Stores selects where Install and Uninstall act.
type Stores struct {
	System bool // the OS store: Windows CurrentUser Root, the macOS login keychain, the Linux CA folder
	NSS    bool // NSS databases: Firefox profiles, and Chrome/Chromium's ~/.pki/nssdb on Linux
	Java   bool // the cacerts keystore of $JAVA_HOME
}

// Outcome is what happened to one store.
type Outcome int

// Outcomes. Installed, AlreadyPresent, Removed and NotPresent leave the store as asked.
const (
	Installed Outcome = iota
	AlreadyPresent
	Removed
	NotPresent
	Skipped
	Failed
)

func (o Outcome) String() string {
	switch o {
	case Installed:
		return "installed"
	case AlreadyPresent:
		return "already present"
	case Removed:
		return "removed"
	case NotPresent:
		return "not present"
	case Skipped:
		return "skipped"
	}
	return "failed"
}

// Result is one store's outcome.
type Result struct {
	Store   string // the store, e.g. "nss ~/.pki/nssdb"
	Outcome Outcome
	Reason  string // why it was skipped or failed
	Manual  string // when skipped or failed, the command that does it by hand ("" if none)
}

// OK reports whether the store was left as asked.
func (r Result) OK() bool { return r.Outcome < Skipped }

// Env is the machine and user whose stores are changed. The zero Env is this process's.
type Env struct {
	// GOOS picks the system store and the NSS profile folders; "" means runtime.GOOS.
	GOOS string
	// Home is the user's home folder, where browsers keep NSS databases; "" means
	// os.UserHomeDir().
	Home string
	// Root is prepended to system-wide paths (the Linux CA folders); "" means the real root.
	Root string
	// JavaHome is the Java runtime whose cacerts is changed; "" means $JAVA_HOME.
	JavaHome string
	// Admin reports whether this process may change system-wide files; nil means it runs
	// as root (effective uid 0).
	Admin func() bool
	// Run runs a program and returns its combined output; nil means os/exec.
	Run func(name string, args ...string) ([]byte, error)
	// LookPath finds a program; nil means exec.LookPath.
	LookPath func(file string) (string, error)

	// openWindowsRoot opens the Windows CurrentUser Root store; nil means crypt32. A test seam.
	openWindowsRoot func() (certStore, error)
}

// CA is the certificate to trust and the PEM file that holds it.
type CA struct {
	Cert *x509.Certificate
	File string // a PEM file of Cert alone, handed to the stores' tools
}

// nickname names the CA in stores that want a name (NSS, Java). The subject's CommonName
// is unique per CA (certs.newCA), and is what a browser shows.
func (c CA) nickname() string { return c.Cert.Subject.CommonName }

// sha1Hex is the certificate's SHA-1 thumbprint, the id Windows and macOS tools take.
func (c CA) sha1Hex() string {
	sum := sha1.Sum(c.Cert.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// store is one place a CA can be trusted.
type store interface {
	// name says which store this is, for the user.
	name() string
	// trusts reports whether the store already trusts ca.
	trusts(ca CA) (bool, error)
	// add makes the store trust ca.
	add(ca CA) error
	// remove takes ca out of the store and reports whether it was there.
	remove(ca CA) (bool, error)
	// manual is the command a user runs to add (or remove) ca by hand.
	manual(ca CA, add bool) string
}

// Install makes each selected store trust ca and returns one Result per store.
func (e *Env) Install(ca CA, which Stores) []Result {
	return e.each(which, func(s store) Result {
		r := Result{Store: s.name()}
		present, err := s.trusts(ca)
		switch {
		case err != nil:
			r.fail(err, s.manual(ca, true))
		case present:
			r.Outcome = AlreadyPresent
		default:
			if err := addAndCheck(s, ca); err != nil {
				r.fail(err, s.manual(ca, true))
			} else {
				r.Outcome = Installed
			}
		}
		return r
	})
}

// addAndCheck adds ca to s, then checks rather than trusts the tool's exit status: certutil,
// for one, keeps an existing entry's name and so can succeed without trusting ours.
func addAndCheck(s store, ca CA) error {
	if err := s.add(ca); err != nil {
		return err
	}
	ok, err := s.trusts(ca)
	if err == nil && !ok {
		err = errors.New("the store took the CA but does not trust it; remove any older copy of it and run this again")
	}
	return err
}

// Uninstall takes ca out of each selected store and returns one Result per store. Running it
// again reports the stores as not present.
func (e *Env) Uninstall(ca CA, which Stores) []Result {
	return e.each(which, func(s store) Result {
		r := Result{Store: s.name()}
		removed, err := s.remove(ca)
		switch {
		case err != nil:
			r.fail(err, s.manual(ca, false))
		case removed:
			r.Outcome = Removed
		default:
			r.Outcome = NotPresent
		}
		return r
	})
}

func (r *Result) fail(err error, manual string) {
	r.Outcome, r.Reason, r.Manual = Failed, err.Error(), manual
	if errors.Is(err, ErrNeedsAdmin) {
		r.Outcome = Skipped
	}
}

// each runs do on every selected store found here, system, then NSS, then Java. A selected
// store that cannot be used at all (no certutil, no JAVA_HOME, an unknown OS) comes back as a
// Skipped result instead.
func (e *Env) each(which Stores, do func(store) Result) []Result {
	var results []Result
	for _, g := range []struct {
		on   bool
		find func() ([]store, []Result)
	}{{which.System, e.systemStore}, {which.NSS, e.nssStores}, {which.Java, e.javaStore}} {
		if !g.on {
			continue
		}
		stores, skipped := g.find()
		results = append(results, skipped...)
		for _, s := range stores {
			results = append(results, do(s))
		}
	}
	return results
}

func (e *Env) systemStore() ([]store, []Result) {
	switch e.goos() {
	case "windows":
		return []store{&windowsRoot{open: e.windowsRootOpener()}}, nil
	case "darwin":
		return []store{&keychain{env: e}}, nil
	case "linux":
		return e.linuxStore()
	}
	return nil, []Result{{Store: "system", Outcome: Skipped,
		Reason: "fusou-proxy cannot change the system store on " + e.goos() + "; add the CA with your OS's tools"}}
}

func (e *Env) goos() string {
	if e.GOOS != "" {
		return e.GOOS
	}
	return runtime.GOOS
}

func (e *Env) home() string {
	if e.Home != "" {
		return e.Home
	}
	h, _ := os.UserHomeDir()
	return h
}

// rootPath is an absolute system path below Root.
func (e *Env) rootPath(p string) string {
	if e.Root == "" {
		return p
	}
	return filepath.Join(e.Root, filepath.FromSlash(p))
}

func (e *Env) admin() bool {
	if e.Admin != nil {
		return e.Admin()
	}
	return os.Geteuid() == 0
}

func (e *Env) run(name string, args ...string) ([]byte, error) {
	if e.Run != nil {
		return e.Run(name, args...)
	}
	return exec.Command(name, args...).CombinedOutput()
}

func (e *Env) lookPath(file string) (string, error) {
	if e.LookPath != nil {
		return e.LookPath(file)
	}
	return exec.LookPath(file)
}

// tilde shortens a path under the home folder for display.
func (e *Env) tilde(p string) string {
	h := e.home()
	if h != "" && (p == h || strings.HasPrefix(p, h+string(filepath.Separator))) {
		return "~" + p[len(h):]
	}
	return p
}

// quote makes s one shell word: POSIX single quotes, or Windows double quotes.
func (e *Env) quote(s string) string {
	if e.goos() == "windows" {
		return `"` + s + `"`
	}
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./,:=+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// cmdError is a failed command: its first line of output says more than an exit status.
func cmdError(name string, out []byte, err error) error {
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	line = strings.TrimSpace(line)
	switch {
	case line == "":
		return fmt.Errorf("%s: %w", name, err)
	case strings.HasPrefix(line, name+":"):
		return errors.New(line)
	}
	return fmt.Errorf("%s: %s", name, line)
}
