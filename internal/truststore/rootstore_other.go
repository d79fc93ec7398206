//go:build !windows

package truststore

import "errors"

func openCurrentUserRoot() (certStore, error) {
	return nil, errors.New("the Windows certificate store exists only on Windows")
}
