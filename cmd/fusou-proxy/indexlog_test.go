package main

import (
	"errors"
	"fmt"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fusou-proxy/fusou-proxy/assets"
)

// A failed keys request is a WARN; a refresh skipped for want of a usable session is not.
func TestIndexFailureLogLevel(t *testing.T) {
	for _, c := range []struct {
		err  error
		warn bool
	}{
		{fmt.Errorf("refresh asset index: %w", &assets.StatusError{Stage: assets.StageKeys, Status: 503, Class: assets.Transient}), true},
		{fmt.Errorf("refresh asset index: %w", &assets.StatusError{Stage: assets.StageKeys, Status: 401, Class: assets.Auth}), true},
		{errors.New("dial tcp: connection refused"), true},
		{assets.ErrNoSession, false},
		{assets.ErrSessionExpired, false},
	} {
		core, logs := observer.New(zapcore.DebugLevel)
		logIndexFailure(zap.New(core), c.err)
		if got := logs.FilterLevelExact(zapcore.WarnLevel).Len() == 1; got != c.warn {
			t.Errorf("%v: WARN = %v, want %v", c.err, got, c.warn)
		}
	}
}
