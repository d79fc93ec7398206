package main

import (
	"errors"
	"testing"
	"time"

	"github.com/zalando/go-keyring"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fusou-proxy/fusou-proxy/assets"
)

// A proxy-owned session is mirrored into the keychain after every change and read back as
// proxy-owned; a caller's session, or none, leaves no item behind.
func TestSessionKeeperMirrorsOwnedSession(t *testing.T) {
	keyring.MockInit()
	h := &assets.SessionHolder{}
	k := &sessionKeeper{holder: h, log: zap.NewNop()}
	h.SetRefresher(nil, k.changed, zap.NewNop())

	exp := time.Unix(1900000000, 0).UTC()
	h.Set(assets.Session{AccessToken: "acc-1", RefreshToken: "ref-1", DatasetToken: "ds", ExpiresAt: exp, AutoRefresh: true})
	got, ok := (&sessionKeeper{holder: h, log: zap.NewNop()}).load()
	if !ok || got.AccessToken != "acc-1" || got.RefreshToken != "ref-1" || got.DatasetToken != "ds" ||
		!got.ExpiresAt.Equal(exp) || !got.AutoRefresh {
		t.Fatalf("load = %v, %v; want the owned session", got, ok)
	}

	h.Set(assets.Session{AccessToken: "acc-2", RefreshToken: "ref-2", AutoRefresh: true})
	if got, _ := k.load(); got.RefreshToken != "ref-2" {
		t.Errorf("after a rotation the keychain holds refresh token %q, want ref-2", got.RefreshToken)
	}

	h.Set(assets.Session{AccessToken: "caller", RefreshToken: "caller-r"})
	if _, err := keyring.Get(keychainService, keychainUser); !errors.Is(err, keyring.ErrNotFound) {
		t.Errorf("a caller-managed session left a keychain item (err %v)", err)
	}
	h.Set(assets.Session{AccessToken: "acc-3", RefreshToken: "ref-3", AutoRefresh: true})
	h.Clear()
	if _, ok := k.load(); ok {
		t.Error("a cleared session is still in the keychain")
	}
}

// Without a working keychain the session stays in memory, with one WARN line however often
// it changes.
func TestSessionKeeperWithoutKeychainWarnsOnce(t *testing.T) {
	keyring.MockInitWithError(errors.New("no secret service"))
	t.Cleanup(keyring.MockInit)
	core, logs := observer.New(zapcore.WarnLevel)
	h := &assets.SessionHolder{}
	k := &sessionKeeper{holder: h, log: zap.New(core)}
	h.SetRefresher(nil, k.changed, zap.NewNop())
	if _, ok := k.load(); ok {
		t.Fatal("load found a session in a failing keychain")
	}
	for i := range 3 {
		h.Set(assets.Session{AccessToken: "a", RefreshToken: string(rune('a' + i)), AutoRefresh: true})
	}
	if s, ok := h.Get(); !ok || s.AccessToken != "a" {
		t.Error("the session was lost because the keychain failed")
	}
	if n := logs.FilterMessageSnippet("No OS keychain").Len(); n != 1 {
		t.Errorf("%d WARN lines about the keychain, want 1", n)
	}
}
