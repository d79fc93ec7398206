package assets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	netErr := &url.Error{Op: "Post", URL: "https://fusou.dev/x", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}
	tests := []struct {
		status int
		err    error
		want   Class
	}{
		{200, nil, Success}, {201, nil, Success}, {204, nil, Success}, {409, nil, Success},
		{401, nil, Auth}, {403, nil, Auth},
		{0, ErrNoSession, Auth}, {0, fmt.Errorf("upload: %w", ErrNoSession), Auth},
		{0, netErr, Transient}, {0, context.DeadlineExceeded, Transient}, {0, io.ErrUnexpectedEOF, Transient},
		{0, ErrStalled, Transient}, {0, ErrBadAnswer, Transient},
		{408, nil, Transient}, {425, nil, Transient}, {429, nil, Transient},
		{500, nil, Transient}, {502, nil, Transient}, {503, nil, Transient}, {504, nil, Transient}, {599, nil, Transient},
		{501, nil, Permanent},
		{400, nil, Permanent}, {404, nil, Permanent}, {405, nil, Permanent}, {411, nil, Permanent},
		{413, nil, Permanent}, {415, nil, Permanent}, {422, nil, Permanent}, {451, nil, Permanent},
		{0, ErrInvalidAsset, Permanent}, {0, ErrUploadURL, Permanent},
		{301, nil, Permanent}, {302, nil, Permanent}, {100, nil, Permanent}, {0, nil, Permanent}, {600, nil, Permanent},
	}
	for _, tt := range tests {
		if got := Classify(tt.status, tt.err); got != tt.want {
			t.Errorf("Classify(%d, %v) = %s, want %s", tt.status, tt.err, got, tt.want)
		}
	}
}

func TestClassString(t *testing.T) {
	for c, want := range map[Class]string{Success: "success", Auth: "auth", Transient: "transient", Permanent: "permanent", 0: "unknown", 99: "unknown"} {
		if got := c.String(); got != want {
			t.Errorf("Class(%d).String() = %q, want %q", int(c), got, want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"120", 120 * time.Second, true},
		{" 7 ", 7 * time.Second, true},
		{"0", 0, true},
		{"3600", time.Hour, true},
		{"3601", time.Hour, true},
		{"99999999", time.Hour, true},
		{"99999999999999999999", time.Hour, true}, // past int64: still capped
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), time.Hour, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{now.Add(90 * time.Second).Format(time.RFC850), 90 * time.Second, true},
		{now.Add(90 * time.Second).Format(time.ANSIC), 90 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.in, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestStatusError(t *testing.T) {
	err := error(&StatusError{Stage: StageUpload, Status: 503, Class: Transient})
	if got, want := err.Error(), "upload: 503 Service Unavailable (transient)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var se *StatusError
	if !errors.As(fmt.Errorf("wrapped: %w", err), &se) || se.Status != 503 {
		t.Errorf("errors.As failed")
	}
}

func TestJitteredBackoff(t *testing.T) {
	min, max := 100*time.Millisecond, time.Second
	for attempt := range 10 {
		hi := min << attempt
		if hi > max {
			hi = max
		}
		seen := map[time.Duration]bool{}
		for range 50 {
			d := jitteredBackoff(min, max, attempt, nil)
			if d < min || d > hi {
				t.Fatalf("attempt %d: wait %s outside [%s, %s]", attempt, d, min, hi)
			}
			seen[d] = true
		}
		if attempt > 0 && len(seen) < 2 {
			t.Errorf("attempt %d: no jitter", attempt)
		}
	}
	resp := &http.Response{Header: http.Header{"Retry-After": {"1"}}}
	if d := jitteredBackoff(time.Millisecond, 2*time.Second, 0, resp); d != time.Second {
		t.Errorf("with Retry-After 1: %s, want 1s", d)
	}
}
