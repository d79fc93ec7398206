package truststore

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// linuxCAFolder is where a distribution takes locally added CAs, and the command that rebuilds
// the system bundle from them.
type linuxCAFolder struct {
	dir    string
	ext    string // the extension the rebuild command looks for
	update []string
}

// linuxCAFolders are tried in order; the first that exists is used.
var linuxCAFolders = []linuxCAFolder{
	{"/etc/pki/ca-trust/source/anchors", ".pem", []string{"update-ca-trust", "extract"}},       // Fedora, RHEL
	{"/usr/local/share/ca-certificates", ".crt", []string{"update-ca-certificates"}},           // Debian, Ubuntu
	{"/etc/ca-certificates/trust-source/anchors", ".crt", []string{"trust", "extract-compat"}}, // Arch
	{"/usr/share/pki/trust/anchors", ".crt", []string{"update-ca-certificates"}},               // openSUSE
}

func (e *Env) linuxStore() ([]store, []Result) {
	for _, f := range linuxCAFolders {
		if fi, err := os.Stat(e.rootPath(f.dir)); err == nil && fi.IsDir() {
			return []store{&linuxSystem{env: e, folder: f}}, nil
		}
	}
	return nil, []Result{{Store: "system", Outcome: Skipped,
		Reason: "no known system CA folder (such as /usr/local/share/ca-certificates); see your distribution's documentation on adding a CA"}}
}

// linuxSystem is a distribution's CA folder. Changing it needs root, so an ordinary user
// gets the sudo commands to run instead.
type linuxSystem struct {
	env    *Env
	folder linuxCAFolder
}

func (s *linuxSystem) name() string { return "system (" + s.folder.dir + ")" }

// file is the CA's file in the folder, named after its unique CommonName.
func (s *linuxSystem) file(ca CA) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, ca.nickname())
	return path.Join(s.folder.dir, name+s.folder.ext)
}

func (s *linuxSystem) trusts(ca CA) (bool, error) {
	data, err := os.ReadFile(s.env.rootPath(s.file(ca)))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read %s: %w", s.file(ca), err)
	}
	block, _ := pem.Decode(data)
	return block != nil && bytes.Equal(block.Bytes, ca.Cert.Raw), nil
}

func (s *linuxSystem) add(ca CA) error {
	if !s.env.admin() {
		return s.needsRoot()
	}
	data, err := os.ReadFile(ca.File)
	if err != nil {
		return fmt.Errorf("read %s: %w", ca.File, err)
	}
	if err := os.WriteFile(s.env.rootPath(s.file(ca)), data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", s.file(ca), err)
	}
	return s.update()
}

func (s *linuxSystem) remove(ca CA) (bool, error) {
	if _, err := os.Stat(s.env.rootPath(s.file(ca))); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if !s.env.admin() {
		return false, s.needsRoot()
	}
	if err := os.Remove(s.env.rootPath(s.file(ca))); err != nil {
		return false, fmt.Errorf("remove %s: %w", s.file(ca), err)
	}
	return true, s.update()
}

func (s *linuxSystem) update() error {
	if out, err := s.env.run(s.folder.update[0], s.folder.update[1:]...); err != nil {
		return cmdError(s.folder.update[0], out, err)
	}
	return nil
}

func (s *linuxSystem) needsRoot() error {
	return fmt.Errorf("%w: %s belongs to root; run the command below", ErrNeedsAdmin, s.folder.dir)
}

func (s *linuxSystem) manual(ca CA, add bool) string {
	update := "sudo " + strings.Join(s.folder.update, " ")
	if add {
		return fmt.Sprintf("sudo cp %s %s && %s", s.env.quote(ca.File), s.env.quote(s.file(ca)), update)
	}
	return fmt.Sprintf("sudo rm -f %s && %s", s.env.quote(s.file(ca)), update)
}
