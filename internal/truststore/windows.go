package truststore

import (
	"errors"
	"fmt"
	"syscall"
)

// certStore is a Windows certificate store (rootstore_windows.go has the crypt32 one).
type certStore interface {
	// contains reports whether the store holds the certificate der.
	contains(der []byte) (bool, error)
	// add puts der into the store.
	add(der []byte) error
	// remove deletes every copy of der and reports how many there were.
	remove(der []byte) (int, error)
	close() error
}

// windowsRoot is the current user's Trusted Root Certification Authorities. Changing it needs
// no administrator, but Windows asks the user to confirm each new root in a dialog.
type windowsRoot struct{ open func() (certStore, error) }

func (e *Env) windowsRootOpener() func() (certStore, error) {
	if e.openWindowsRoot != nil {
		return e.openWindowsRoot
	}
	return openCurrentUserRoot
}

func (s *windowsRoot) name() string { return "system (Windows CurrentUser Root)" }

func (s *windowsRoot) with(f func(certStore) error) error {
	st, err := s.open()
	if err != nil {
		return fmt.Errorf("open the CurrentUser Root store: %w", err)
	}
	err = f(st)
	if cerr := st.close(); err == nil && cerr != nil {
		err = fmt.Errorf("close the CurrentUser Root store: %w", cerr)
	}
	return explainWindows(err)
}

func (s *windowsRoot) trusts(ca CA) (found bool, err error) {
	err = s.with(func(st certStore) error {
		found, err = st.contains(ca.Cert.Raw)
		return err
	})
	return found, err
}

func (s *windowsRoot) add(ca CA) error {
	return s.with(func(st certStore) error { return st.add(ca.Cert.Raw) })
}

func (s *windowsRoot) remove(ca CA) (removed bool, err error) {
	err = s.with(func(st certStore) error {
		n, err := st.remove(ca.Cert.Raw)
		removed = n > 0
		return err
	})
	return removed, err
}

// Answers from crypt32 when the user says No in the confirmation dialog: ERROR_CANCELLED,
// bare or as an HRESULT.
const (
	errorCancelled        syscall.Errno = 1223
	errorCancelledHResult syscall.Errno = 0x800704C7
)

// explainWindows turns the user's No in the confirmation dialog into what to do.
func explainWindows(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) && (errno == errorCancelled || errno == errorCancelledHResult) {
		return errors.New("you answered No to the Windows security warning: run this again and choose Yes")
	}
	return err
}

func (s *windowsRoot) manual(ca CA, add bool) string {
	if add {
		return "certutil -user -addstore Root " + `"` + ca.File + `"`
	}
	return "certutil -user -delstore Root " + ca.sha1Hex()
}
