package truststore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// javaStorePass is the password every JDK ships cacerts with. It only guards the file's
// integrity; it is not a secret.
const javaStorePass = "changeit"

func (e *Env) javaStore() ([]store, []Result) {
	skip := func(reason string) ([]store, []Result) {
		return nil, []Result{{Store: "java", Outcome: Skipped, Reason: reason}}
	}
	home := e.JavaHome
	if home == "" {
		home = os.Getenv("JAVA_HOME")
	}
	if home == "" {
		return skip("JAVA_HOME is not set: set it to the Java runtime to change and run this again")
	}
	keytool := filepath.Join(home, "bin", "keytool")
	if e.goos() == "windows" {
		keytool += ".exe"
	}
	if _, err := os.Stat(keytool); err != nil {
		return skip("JAVA_HOME (" + home + ") has no bin/keytool")
	}
	for _, p := range []string{"lib/security/cacerts", "jre/lib/security/cacerts"} {
		cacerts := filepath.Join(home, filepath.FromSlash(p))
		if _, err := os.Stat(cacerts); err == nil {
			return []store{&javaKeystore{env: e, keytool: keytool, cacerts: cacerts}}, nil
		}
	}
	return skip("JAVA_HOME (" + home + ") has no lib/security/cacerts")
}

// javaKeystore is a Java runtime's cacerts, changed with its keytool. It usually belongs to
// root (or, on Windows, to administrators).
type javaKeystore struct {
	env              *Env
	keytool, cacerts string
}

func (s *javaKeystore) name() string { return "java " + s.cacerts }

func (s *javaKeystore) runKeytool(ca CA, args ...string) ([]byte, error) {
	args = append(args, "-keystore", s.cacerts, "-storepass", javaStorePass, "-alias", ca.nickname())
	return s.env.run(s.keytool, args...)
}

func (s *javaKeystore) trusts(ca CA) (bool, error) {
	out, err := s.runKeytool(ca, "-list")
	if err != nil {
		if strings.Contains(string(out), "does not exist") {
			return false, nil
		}
		return false, cmdError("keytool", out, err)
	}
	return true, nil
}

func (s *javaKeystore) add(ca CA) error {
	if err := s.writable(); err != nil {
		return err
	}
	if out, err := s.runKeytool(ca, "-importcert", "-noprompt", "-file", ca.File); err != nil {
		return cmdError("keytool", out, err)
	}
	return nil
}

func (s *javaKeystore) remove(ca CA) (bool, error) {
	present, err := s.trusts(ca)
	if err != nil || !present {
		return false, err
	}
	if err := s.writable(); err != nil {
		return false, err
	}
	if out, err := s.runKeytool(ca, "-delete"); err != nil {
		return false, cmdError("keytool", out, err)
	}
	return true, nil
}

// writable checks, without changing it, that this process may write cacerts.
func (s *javaKeystore) writable() error {
	f, err := os.OpenFile(s.cacerts, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: %s belongs to root or an administrator; run the command below as one", ErrNeedsAdmin, s.cacerts)
	} else if err != nil {
		return fmt.Errorf("open %s: %w", s.cacerts, err)
	}
	return f.Close()
}

func (s *javaKeystore) manual(ca CA, add bool) string {
	q := s.env.quote
	cmd := q(s.keytool) + " -delete"
	if add {
		cmd = q(s.keytool) + " -importcert -noprompt -file " + q(ca.File)
	}
	cmd += fmt.Sprintf(" -keystore %s -storepass %s -alias %s", q(s.cacerts), javaStorePass, q(ca.nickname()))
	if s.env.goos() != "windows" {
		cmd = "sudo " + cmd
	}
	return cmd
}
