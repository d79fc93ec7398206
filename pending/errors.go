package pending

import "errors"

// Errors callers branch on. They are wrapped with what was being done, so test with errors.Is.
var (
	// ErrNotFound: no pending entry has that id.
	ErrNotFound = errors.New("pending entry not found")
	// ErrLocked: another process owns the store (its lock file is held).
	ErrLocked = errors.New("pending store is in use by another process")
	// ErrCorrupt: an entry's files are unreadable or do not match its metadata; it has been
	// moved to corrupt/ (unless the store is read-only).
	ErrCorrupt = errors.New("pending entry is corrupt")
	// ErrReadOnly: the store was opened read-only and the call would change it.
	ErrReadOnly = errors.New("pending store is read-only")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("pending store is closed")
	// ErrFull: the entry cannot fit under MaxFiles/MaxBytes even after evicting every entry that
	// is not being uploaded.
	ErrFull = errors.New("pending store is full")
	// ErrInvalid: the Context given to Save or Commit is incomplete or malformed.
	ErrInvalid = errors.New("invalid pending entry")
	// ErrMismatch: the bytes given to Save or Commit do not match the Context's size or hash.
	ErrMismatch = errors.New("bytes do not match the context")
	// ErrBusy: Import found a .json changed within QuietPeriod: a running program may be
	// writing to the folder.
	ErrBusy = errors.New("folder is being written to")
	// ErrHeld: the entry is being uploaded, or changed by another call.
	ErrHeld = errors.New("pending entry is in use")
)
