package private

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Dir gives the existing folder path a protected DACL granting full control to the current
// user and SYSTEM, inherited by its files and folders. SetNamedSecurityInfo passes the new
// entries down to the entries already there that inherit, as a 0700 folder guards them on Unix.
func Dir(path string) error {
	sd, err := descriptor("OICI")
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("make private: %w", err)
	}
	err = windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
	if err != nil {
		return fmt.Errorf("make private: set acl of %s: %w", path, err)
	}
	return nil
}

// File gives the existing file path a protected DACL granting full control to the current
// user and SYSTEM. It sets it on a handle (NtSetSecurityObject), not by name: a file has
// nothing to pass down, and wine 8.0's SetNamedSecurityInfo adds the parent's inheritable
// entries even to a protected DACL, so this way the wine tests can check it.
func File(path string) error {
	sd, err := descriptor("")
	if err != nil {
		return err
	}
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return fmt.Errorf("make private: %w", err)
	}
	h, err := windows.CreateFile(p, windows.WRITE_DAC|windows.READ_CONTROL,
		windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE|windows.FILE_SHARE_DELETE, nil,
		windows.OPEN_EXISTING, windows.FILE_FLAG_BACKUP_SEMANTICS, 0)
	if err != nil {
		return fmt.Errorf("make private: open %s: %w", path, err)
	}
	defer windows.CloseHandle(h)
	err = windows.SetKernelObjectSecurity(h, windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, sd)
	if err != nil {
		return fmt.Errorf("make private: set acl of %s: %w", path, err)
	}
	return nil
}

// descriptor is the private security descriptor in SDDL: "P" protects the DACL from
// inheriting, "FA" is full access, "SY" is SYSTEM; inherit is "OICI" for a folder.
func descriptor(inherit string) (*windows.SECURITY_DESCRIPTOR, error) {
	user, err := currentUser()
	if err != nil {
		return nil, err
	}
	sddl := fmt.Sprintf("D:P(A;%[1]s;FA;;;%[2]s)(A;%[1]s;FA;;;SY)", inherit, user)
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return nil, fmt.Errorf("make private: parse %s: %w", sddl, err)
	}
	return sd, nil
}

func currentUser() (*windows.SID, error) {
	u, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return nil, fmt.Errorf("find current user: %w", err)
	}
	return u.User.Sid, nil
}

// Check returns nil if only the current user, SYSTEM and Administrators may open path, and an
// error wrapping ErrExposed that names someone else who may if not. Administrators are
// accepted, though Dir and File do not grant them, because Windows gives them every user
// profile: a data dir under the profile is as private as the profile. Deny entries are
// ignored, so an ACL that allows Everyone and then denies some of them counts as exposed.
func Check(path string) error {
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return fmt.Errorf("check privacy: read acl of %s: %w", path, err)
	}
	dacl, _, err := sd.DACL()
	if errors.Is(err, windows.ERROR_OBJECT_NOT_FOUND) || err == nil && dacl == nil {
		return fmt.Errorf("%s: %w (no acl: everyone may open it)", path, ErrExposed)
	} else if err != nil {
		return fmt.Errorf("check privacy: %w", err)
	}
	user, err := currentUser()
	if err != nil {
		return err
	}
	for i := range uint32(dacl.AceCount) {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			return fmt.Errorf("check privacy: read acl entry %d of %s: %w", i, path, err)
		}
		if ace.Header.AceType == windows.ACCESS_DENIED_ACE_TYPE ||
			ace.Header.AceFlags&windows.INHERIT_ONLY_ACE != 0 || ace.Mask == 0 {
			continue
		}
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE {
			return fmt.Errorf("%s: %w (an acl entry of type %d)", path, ErrExposed, ace.Header.AceType)
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		if !sid.Equals(user) && !sid.IsWellKnown(windows.WinLocalSystemSid) &&
			!sid.IsWellKnown(windows.WinBuiltinAdministratorsSid) {
			return fmt.Errorf("%s: %w (%s may open it)", path, ErrExposed, name(sid))
		}
	}
	return nil
}

// name is DOMAIN\account for sid, or its S-1-... form when it has no name.
func name(sid *windows.SID) string {
	account, domain, _, err := sid.LookupAccount("")
	if err != nil {
		return sid.String()
	}
	if domain == "" {
		return account
	}
	return domain + `\` + account
}

// CreateTemp is os.CreateTemp for a file that has File's DACL from the moment it exists, so no
// other user can open it in between (a handle keeps the access it was opened with).
func CreateTemp(dir, pattern string) (*os.File, error) {
	sd, err := descriptor("")
	if err != nil {
		return nil, err
	}
	sa := &windows.SecurityAttributes{Length: uint32(unsafe.Sizeof(windows.SecurityAttributes{})), SecurityDescriptor: sd}
	prefix, suffix := pattern, ""
	if i := strings.LastIndex(pattern, "*"); i >= 0 {
		prefix, suffix = pattern[:i], pattern[i+1:]
	}
	for range 100 {
		name := filepath.Join(dir, prefix+strconv.FormatUint(uint64(rand.Uint32()), 10)+suffix)
		p, err := windows.UTF16PtrFromString(name)
		if err != nil {
			return nil, err
		}
		h, err := windows.CreateFile(p, windows.GENERIC_READ|windows.GENERIC_WRITE,
			windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE, sa, windows.CREATE_NEW, windows.FILE_ATTRIBUTE_NORMAL, 0)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "createtemp", Path: name, Err: err}
		}
		return os.NewFile(uintptr(h), name), nil
	}
	return nil, &fs.PathError{Op: "createtemp", Path: filepath.Join(dir, pattern), Err: fs.ErrExist}
}
