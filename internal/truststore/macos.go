package truststore

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// keychain is the user's login keychain with the user's trust settings, changed with the
// security tool. Unlike mkcert's System keychain it needs no sudo: macOS asks for the user's
// own password in a window, and Safari, Chrome and Go programs honour user trust settings.
type keychain struct{ env *Env }

func (s *keychain) name() string { return "system (macOS login keychain)" }

func (s *keychain) path() string {
	return filepath.Join(s.env.home(), "Library", "Keychains", "login.keychain-db")
}

// trusts looks for the CA's SHA-1 among the login keychain's certificates with its name.
func (s *keychain) trusts(ca CA) (bool, error) {
	out, err := s.env.run("security", "find-certificate", "-a", "-Z", "-c", ca.nickname(), s.path())
	if err != nil {
		if strings.Contains(string(out), "could not be found") {
			return false, nil
		}
		return false, s.explain(out, err)
	}
	return strings.Contains(strings.ToUpper(string(out)), ca.sha1Hex()), nil
}

func (s *keychain) add(ca CA) error {
	if out, err := s.env.run("security", "add-trusted-cert", "-r", "trustRoot", "-k", s.path(), ca.File); err != nil {
		return s.explain(out, err)
	}
	return nil
}

func (s *keychain) remove(ca CA) (bool, error) {
	present, err := s.trusts(ca)
	if err != nil || !present {
		return false, err
	}
	// The trust setting first, then the certificate; a missing trust setting is no error.
	if out, err := s.env.run("security", "remove-trusted-cert", ca.File); err != nil &&
		!strings.Contains(string(out), "could not be found") {
		return false, s.explain(out, err)
	}
	if out, err := s.env.run("security", "delete-certificate", "-Z", ca.sha1Hex(), s.path()); err != nil {
		return false, s.explain(out, err)
	}
	return true, nil
}

// explain turns the security tool's answers to a refused password prompt into what to do.
func (s *keychain) explain(out []byte, err error) error {
	msg := strings.ToLower(string(out))
	switch {
	case strings.Contains(msg, "no user interaction was possible"):
		return errors.New("macOS asks for your password in a window, which cannot open here (over SSH?): run this in Terminal on the Mac itself")
	case strings.Contains(msg, "canceled") || strings.Contains(msg, "cancelled"):
		return errors.New("the password prompt was cancelled: run this again and enter your login password")
	}
	return cmdError("security", out, err)
}

func (s *keychain) manual(ca CA, add bool) string {
	q := s.env.quote
	if add {
		return fmt.Sprintf("security add-trusted-cert -r trustRoot -k %s %s", q(s.path()), q(ca.File))
	}
	return fmt.Sprintf("security remove-trusted-cert %s && security delete-certificate -Z %s %s", q(ca.File), ca.sha1Hex(), q(s.path()))
}
