// Package private makes files and folders readable by the current user only (SPEC §2), and
// checks that they are.
//
// On Unix that is mode 0700 for a folder and 0600 for a file. Mode bits mean nothing on
// Windows, so there a file or folder gets a protected DACL (one that inherits nothing from its
// parent) that grants full control to the current user and to SYSTEM, the OS itself, and to no
// one else; a folder's entries inherit it. docs/DECISIONS.md says why SYSTEM and not
// Administrators.
//
// Start with Dir and File, which set the protection, and Check, which reads it back.
package private

import "errors"

// ErrExposed is wrapped by Check's error when someone other than the current user (or, on
// Windows, SYSTEM or Administrators) may open the path.
var ErrExposed = errors.New("open to other users")
