package pending

// SetLimits changes the store's caps while it runs (a config file edit); 0 means no cap. They
// apply from the next commit on.
func (s *Store) SetLimits(maxFiles int, maxBytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.MaxFiles, s.opts.MaxBytes = maxFiles, maxBytes
}
