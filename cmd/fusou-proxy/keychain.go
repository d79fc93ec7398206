package main

import (
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/zalando/go-keyring"
	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/assets"
)

// The keychain item that holds a proxy-owned session: Windows Credential Manager, the macOS
// Keychain or the Secret Service, through go-keyring (SPEC §8). Never a file.
const (
	keychainService = "fusou-proxy"
	keychainUser    = "session"
)

// keptSession is the keychain item's JSON. assets.Session marshals itself redacted, so the
// tokens are copied here, for the keychain only.
type keptSession struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	DatasetToken string    `json:"dataset_token,omitempty"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// sessionKeeper mirrors the held session into the keychain: a proxy-owned session is saved
// after every change (each refresh rotates its refresh token), anything else removes the
// item. Where no keychain works, the session stays in memory with one WARN line.
type sessionKeeper struct {
	holder *assets.SessionHolder
	log    *zap.Logger

	mu     sync.Mutex // serialises keychain writes, so the last change is the one kept
	warned bool
}

// load returns the kept session, if there is one.
func (k *sessionKeeper) load() (assets.Session, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	blob, err := keyring.Get(keychainService, keychainUser)
	if errors.Is(err, keyring.ErrNotFound) {
		return assets.Session{}, false
	}
	if err != nil {
		k.warn(err)
		return assets.Session{}, false
	}
	var kept keptSession
	if err := json.Unmarshal([]byte(blob), &kept); err != nil || kept.AccessToken == "" || kept.RefreshToken == "" {
		k.log.Warn("Ignoring an unreadable session in the OS keychain")
		return assets.Session{}, false
	}
	return assets.Session{AccessToken: kept.AccessToken, RefreshToken: kept.RefreshToken,
		DatasetToken: kept.DatasetToken, ExpiresAt: kept.ExpiresAt, AutoRefresh: true}, true
}

// changed is the holder's onChange hook. It writes what the holder holds when it runs, so
// that two changes racing each other leave the newer one in the keychain.
func (k *sessionKeeper) changed() {
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := k.holder.Get()
	var err error
	if ok && s.AutoRefresh {
		blob, _ := json.Marshal(keptSession{s.AccessToken, s.RefreshToken, s.DatasetToken, s.ExpiresAt})
		err = keyring.Set(keychainService, keychainUser, string(blob))
	} else {
		err = keyring.Delete(keychainService, keychainUser)
		if errors.Is(err, keyring.ErrNotFound) {
			err = nil
		}
	}
	if err != nil {
		k.warn(err)
	}
}

// warn logs, once, that the keychain cannot be used; mu must be held.
func (k *sessionKeeper) warn(err error) {
	if k.warned {
		return
	}
	k.warned = true
	k.log.Warn("No OS keychain available: a session the proxy owns is kept in memory only and must be posted again after a restart",
		zap.String("error", err.Error()))
}
