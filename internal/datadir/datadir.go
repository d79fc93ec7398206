// Package datadir prepares fusou-proxy's data directory (SPEC §2) and its control token, and
// moves this program's files out of the earlier default once (move.go).
//
// Everything in the directory is private to the user: folders 0700, secret files 0600, and on
// Windows an ACL for the current user only (package private).
// Each other package owns its own sub-folder (pending_uploads/, ca/, spool/); this package
// only makes the top and the control token.
package datadir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fusou-proxy/fusou-proxy/internal/atomicfile"
	"github.com/fusou-proxy/fusou-proxy/internal/private"
)

// Names of the data directory's entries.
const (
	TokenFile  = "control.token"
	PendingDir = "pending_uploads"
	CADir      = "ca"
	SpoolDir   = "spool"
	IndexFile  = "asset_index.json"
	ConfigFile = "configs.toml"
)

// Folder names under os.UserConfigDir().
const (
	// DefaultName is the data directory's: fusou-proxy.
	DefaultName = "fusou-proxy"
	// OldDefaultName is the earlier default, which the FUSOU desktop app also uses; this
	// program's files are moved out of it once (MoveOldDefault).
	OldDefaultName = "fusou-app"
)

// Default returns the default data directory, os.UserConfigDir()/fusou-proxy (SPEC §2).
func Default() (string, error) { return userConfigDir(DefaultName) }

// OldDefault returns os.UserConfigDir()/fusou-app, the FUSOU desktop app's folder and this
// program's earlier default.
func OldDefault() (string, error) { return userConfigDir(OldDefaultName) }

func userConfigDir(name string) (string, error) {
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find user config dir: %w", err)
	}
	return filepath.Join(base, name), nil
}

// tokenBytes is the control token's entropy: 32 random bytes, 64 hex characters.
const tokenBytes = 32

// Ensure creates dir (and its parents) and makes it private (private.Dir: 0700, or an ACL
// for the current user only on Windows) if it is not already.
func Ensure(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat data dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data dir %s is not a directory", dir)
	}
	// Only when needed: on Windows the new ACL is passed down to every entry in the folder.
	if err := private.Check(dir); !errors.Is(err, private.ErrExposed) {
		return err // nil: already private
	}
	if err := private.Dir(dir); err != nil {
		return fmt.Errorf("restrict data dir: %w", err)
	}
	return nil
}

// ControlToken returns the control endpoint's bearer token: configured when non-empty,
// else the one in <dir>/control.token, made once (0600) if missing or unusable.
func ControlToken(dir, configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	path := filepath.Join(dir, TokenFile)
	if tok, err := ReadToken(dir); err == nil {
		return tok, nil
	} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errBadToken) {
		return "", err
	}
	buf := make([]byte, tokenBytes)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate control token: %w", err)
	}
	tok := hex.EncodeToString(buf)
	if err := atomicfile.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write control token: %w", err)
	}
	return tok, nil
}

// TightenToken makes <dir>/control.token private (0600, or an ACL for the current user only on
// Windows) if others may read it, and reports whether it had to.
func TightenToken(dir string) (bool, error) {
	path := filepath.Join(dir, TokenFile)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat control token: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return false, nil
	}
	if err := private.Check(path); !errors.Is(err, private.ErrExposed) {
		return false, err // nil: already private
	}
	if err := private.File(path); err != nil {
		return false, fmt.Errorf("restrict control token: %w", err)
	}
	return true, nil
}

var errBadToken = errors.New("control token file is not 64 hex characters")

// ReadToken reads <dir>/control.token without creating it (for commands that talk to a
// running instance).
func ReadToken(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, TokenFile))
	if err != nil {
		return "", fmt.Errorf("read control token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if _, err := hex.DecodeString(tok); err != nil || len(tok) != 2*tokenBytes {
		return "", errBadToken
	}
	return tok, nil
}
