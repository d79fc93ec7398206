package assets

import (
	"testing"
	"time"
)

func TestDrainAllowance(t *testing.T) {
	cases := []struct {
		sent int64
		took time.Duration
		want time.Duration
	}{
		{0, time.Second, 0},
		{1 << 20, 0, 0},
		{1 << 20, time.Second, time.Second},             // all of it may still be in flight
		{64 << 20, 8 * time.Second, time.Second},        // at most maxUnsentTail: 8 MiB at 8 MiB/s
		{100 << 10, time.Millisecond, time.Millisecond}, // a fast link adds next to nothing
	}
	for _, c := range cases {
		if got := drainAllowance(c.sent, c.took); got != c.want {
			t.Errorf("drainAllowance(%d, %v) = %v, want %v", c.sent, c.took, got, c.want)
		}
	}
}
