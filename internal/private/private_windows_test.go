package private_test

import (
	"cmp"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/fusou-proxy/fusou-proxy/internal/private"
	"github.com/fusou-proxy/fusou-proxy/internal/private/privatetest"
)

// entry is one ACL entry read back: who, what access, which flags.
type entry struct {
	sid   string
	mask  windows.ACCESS_MASK
	flags uint8
}

// readACL reads path's DACL back: whether it is protected, and its entries sorted by SID.
func readACL(t *testing.T, path string) (bool, []entry) {
	t.Helper()
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		t.Fatal(err)
	}
	control, _, err := sd.Control()
	if err != nil {
		t.Fatal(err)
	}
	dacl, _, err := sd.DACL()
	if err != nil || dacl == nil {
		t.Fatalf("%s has no DACL (%v)", path, err)
	}
	var got []entry
	for i := range uint32(dacl.AceCount) {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			t.Fatal(err)
		}
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE {
			t.Fatalf("entry %d has type %d, want allowed", i, ace.Header.AceType)
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		got = append(got, entry{sid.String(), ace.Mask, ace.Header.AceFlags})
	}
	slices.SortFunc(got, func(a, b entry) int { return cmp.Compare(a.sid, b.sid) })
	return control&windows.SE_DACL_PROTECTED != 0, got
}

// wantOwnerOnly fails unless path's DACL grants full access to the current user and SYSTEM
// only, with the given inheritance flags, and (but under wine, which cannot) is protected.
func wantOwnerOnly(t *testing.T, path string, flags uint8) {
	t.Helper()
	u, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		t.Fatal(err)
	}
	const full = windows.ACCESS_MASK(0x1f01ff) // FILE_ALL_ACCESS, SDDL "FA"
	want := []entry{{u.User.Sid.String(), full, flags}, {"S-1-5-18", full, flags}}
	slices.SortFunc(want, func(a, b entry) int { return cmp.Compare(a.sid, b.sid) })
	protected, got := readACL(t, path)
	if !slices.Equal(got, want) {
		t.Errorf("%s: DACL %+v, want %+v", filepath.Base(path), got, want)
	}
	t.Run("protected", func(t *testing.T) {
		privatetest.SkipUnderWine(t, privatetest.WineNoDescriptors)
		if !protected {
			t.Errorf("%s: DACL not protected: it would take its parent's entries", filepath.Base(path))
		}
	})
}

// TestACLReadBack sets each kind of private ACL and reads it back entry by entry.
func TestACLReadBack(t *testing.T) {
	t.Run("File", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "control.token")
		if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		privatetest.Expose(t, file)
		if err := private.File(file); err != nil {
			t.Fatal(err)
		}
		wantOwnerOnly(t, file, 0)
	})
	t.Run("CreateTemp", func(t *testing.T) {
		f, err := private.CreateTemp(t.TempDir(), "tmp-*")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		wantOwnerOnly(t, f.Name(), 0)
	})
	t.Run("Dir", func(t *testing.T) {
		dir := t.TempDir()
		if err := private.Dir(dir); err != nil {
			t.Fatal(err)
		}
		privatetest.SkipUnderWine(t, privatetest.WineNamedMergesParent)
		wantOwnerOnly(t, dir, windows.OBJECT_INHERIT_ACE|windows.CONTAINER_INHERIT_ACE)
	})
}

// TestDirEntriesInherit: what a folder held, and what is made in it later, becomes private
// with it.
func TestDirEntriesInherit(t *testing.T) {
	privatetest.SkipUnderWine(t, privatetest.WineNoDescriptors)
	dir := t.TempDir()
	old := filepath.Join(dir, "asset_index.json")
	if err := os.WriteFile(old, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := private.Dir(dir); err != nil {
		t.Fatal(err)
	}
	made := filepath.Join(dir, "spool")
	if err := os.Mkdir(made, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{old, made} {
		privatetest.WantPrivate(t, path)
		_, got := readACL(t, path)
		for _, e := range got {
			if e.flags&windows.INHERITED_ACE == 0 {
				t.Errorf("%s: entry %+v not inherited from the private folder", filepath.Base(path), e)
			}
		}
	}
}
