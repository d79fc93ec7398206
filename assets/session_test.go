package assets

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

var secretSession = Session{
	AccessToken:  "access-ABCDEF123456",
	RefreshToken: "refresh-ABCDEF123456",
	DatasetToken: "dataset-ABCDEF123456",
	ExpiresAt:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
}

// leaks reports whether s holds any of secretSession's tokens, also in the
// hex that %x would print.
func leaks(s string) bool {
	for _, tok := range []string{secretSession.AccessToken, secretSession.RefreshToken, secretSession.DatasetToken} {
		if strings.Contains(s, tok) || strings.Contains(s, fmt.Sprintf("%x", tok)) || strings.Contains(s, "ABCDEF123456") {
			return true
		}
	}
	return false
}

func TestSessionRedacted(t *testing.T) {
	h := new(SessionHolder)
	h.Set(secretSession)
	type wrapper struct {
		S  Session
		P  *Session
		H  *SessionHolder
		Sl []Session
	}
	s := secretSession
	values := map[string]any{
		"session":  secretSession,
		"pointer":  &s,
		"holder":   h,
		"wrapper":  wrapper{S: s, P: &s, H: h, Sl: []Session{s}},
		"map":      map[string]Session{"k": s},
		"anything": any(s),
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v"} {
			if out := fmt.Sprintf(verb, v); leaks(out) {
				t.Errorf("%s with %s: %s", name, verb, out)
			}
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: json: %v", name, err)
		}
		if leaks(string(b)) {
			t.Errorf("%s as JSON: %s", name, b)
		}
	}
	if got := secretSession.String(); !strings.Contains(got, redacted) || !strings.Contains(got, "2026-01-02T03:04:05Z") {
		t.Errorf("String() = %q, want the redaction marker and the expiry", got)
	}

	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	log.Info("session", zap.Object("s", secretSession), zap.Any("any", secretSession), zap.Stringer("str", secretSession),
		zap.Reflect("reflect", secretSession), zap.Object("holder", h), zap.Any("holder_any", h))
	log.Sugar().Infow("sugared", "s", secretSession, "h", h)
	log.Sugar().Infof("formatted %v %+v", secretSession, h)
	for _, e := range logs.All() {
		if out := fmt.Sprintf("%s %v", e.Message, e.ContextMap()); leaks(out) {
			t.Errorf("log line leaks: %s", out)
		}
	}
	if f := logs.All()[0].ContextMap()["s"].(map[string]any); f["access_token_set"] != true {
		t.Errorf("zap object = %v, want access_token_set", f)
	}
}

func TestSessionHolder(t *testing.T) {
	var h SessionHolder // the zero value holds none
	if _, ok := h.Get(); ok {
		t.Fatal("zero holder has a session")
	}
	if got := fmt.Sprint(&h); got != "SessionHolder{none}" {
		t.Errorf("empty holder prints %q", got)
	}
	h.Set(secretSession)
	if s, ok := h.Get(); !ok || s != secretSession {
		t.Errorf("Get = %v, %v", s, ok)
	}
	h.Set(Session{RefreshToken: "r"}) // no access token: none
	if _, ok := h.Get(); ok {
		t.Errorf("a session without an access token counts")
	}
	h.Set(secretSession)
	h.Clear()
	if s, ok := h.Get(); ok || s != (Session{}) {
		t.Errorf("after Clear: %v, %v", s, ok)
	}
	if v := h.Version(); v != 4 {
		t.Errorf("Version = %d, want 4", v)
	}
	if b, _ := json.Marshal(&h); string(b) != "null" {
		t.Errorf("empty holder JSON = %s", b)
	}
}

func TestSessionHolderConcurrent(t *testing.T) {
	var h SessionHolder
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				switch (i + j) % 3 {
				case 0:
					h.Set(Session{AccessToken: fmt.Sprint("a", i, j)})
				case 1:
					if s, ok := h.Get(); ok && s.AccessToken == "" {
						t.Errorf("Get returned a session without token")
					}
				case 2:
					h.Clear()
				}
			}
		}()
	}
	wg.Wait()
}
