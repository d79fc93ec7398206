package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fusou-proxy/fusou-proxy/assets"
)

// One INFO line a period sums up what happened in it; a quiet period logs nothing.
func TestActivitySummary(t *testing.T) {
	var mu sync.Mutex
	st := assets.Stats{}
	read, once := make(chan struct{}), sync.Once{}
	stats := func() assets.Stats {
		once.Do(func() { close(read) }) // the first read is the baseline
		mu.Lock()
		defer mu.Unlock()
		return st
	}
	core, logs := observer.New(zapcore.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		logActivity(ctx, 5*time.Millisecond, stats, func() int { return 7 }, zap.New(core))
		close(done)
	}()

	<-read
	mu.Lock()
	st.Captured, st.Committed, st.Auth = 30, 30, 30
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for logs.Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // poll: the ticker logs on its own time
	}
	time.Sleep(50 * time.Millisecond) // ten quiet periods, which must add no line
	cancel()
	<-done
	if logs.Len() != 1 {
		t.Fatalf("%d summary lines, want 1 (a quiet period logs nothing)", logs.Len())
	}
	f := logs.All()[0].ContextMap()
	if f["captured"] != int64(30) || f["waiting_for_session"] != int64(30) || f["pending"] != int64(7) {
		t.Errorf("summary fields = %v", f)
	}
}
