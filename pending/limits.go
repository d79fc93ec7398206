package pending

import "time"

// SetLimits changes the store's limits while it runs (a config file edit), with Options'
// conventions: 0 means the default, negative means no limit. The new limits apply from the
// next Save, Cleanup or Purge on.
func (s *Store) SetLimits(maxFiles int, maxBytes int64, ttl time.Duration, maxAttempts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.MaxFiles = orDefault(maxFiles, DefaultMaxFiles)
	s.opts.MaxBytes = orDefault(maxBytes, DefaultMaxBytes)
	s.opts.TTL = orDefault(ttl, DefaultTTL)
	s.opts.MaxAttempts = orDefault(maxAttempts, DefaultMaxAttempts)
}
