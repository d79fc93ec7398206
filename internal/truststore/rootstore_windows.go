package truststore

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/windows"
)

// crypt32Store is a system certificate store opened through crypt32.
type crypt32Store windows.Handle

const certEncoding = windows.X509_ASN_ENCODING | windows.PKCS_7_ASN_ENCODING

// openCurrentUserRoot opens the current user's "ROOT" store, which needs no administrator.
func openCurrentUserRoot() (certStore, error) {
	name, err := windows.UTF16PtrFromString("ROOT")
	if err != nil {
		return nil, err
	}
	h, err := windows.CertOpenSystemStore(0, name)
	if err != nil {
		return nil, err
	}
	return crypt32Store(h), nil
}

func (s crypt32Store) close() error { return windows.CertCloseStore(windows.Handle(s), 0) }

// find returns the store's copy of ctx's certificate, or nil.
func (s crypt32Store) find(ctx *windows.CertContext) (*windows.CertContext, error) {
	found, err := windows.CertFindCertificateInStore(windows.Handle(s), certEncoding, 0,
		windows.CERT_FIND_EXISTING, unsafe.Pointer(ctx), nil)
	if errors.Is(err, windows.Errno(windows.CRYPT_E_NOT_FOUND)) {
		return nil, nil
	}
	return found, err
}

func (s crypt32Store) contains(der []byte) (bool, error) {
	ctx, err := newContext(der)
	if err != nil {
		return false, err
	}
	defer windows.CertFreeCertificateContext(ctx)
	found, err := s.find(ctx)
	if found != nil {
		windows.CertFreeCertificateContext(found)
	}
	return found != nil, err
}

// add puts der in the store; Windows shows its confirmation dialog during this call.
func (s crypt32Store) add(der []byte) error {
	ctx, err := newContext(der)
	if err != nil {
		return err
	}
	defer windows.CertFreeCertificateContext(ctx)
	return windows.CertAddCertificateContextToStore(windows.Handle(s), ctx, windows.CERT_STORE_ADD_REPLACE_EXISTING, nil)
}

func (s crypt32Store) remove(der []byte) (int, error) {
	ctx, err := newContext(der)
	if err != nil {
		return 0, err
	}
	defer windows.CertFreeCertificateContext(ctx)
	n := 0
	for ; n < 100; n++ {
		found, err := s.find(ctx)
		if err != nil || found == nil {
			return n, err
		}
		// CertDeleteCertificateFromStore frees found, whether it succeeds or not.
		if err := windows.CertDeleteCertificateFromStore(found); err != nil {
			return n, err
		}
	}
	return n, fmt.Errorf("the certificate is still in the store after %d deletions", n)
}

func newContext(der []byte) (*windows.CertContext, error) {
	if len(der) == 0 {
		return nil, errors.New("empty certificate")
	}
	ctx, err := windows.CertCreateCertificateContext(certEncoding, &der[0], uint32(len(der)))
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return ctx, nil
}
