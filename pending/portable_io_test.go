package pending

import (
	"bytes"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadSmall: readSmall reads a regular file whole, growing the buffer it is given, and
// refuses a file over its limit, a directory, and a symlink (never followed, on every platform).
func TestReadSmall(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.json")
	mustWriteFile(t, small, []byte(`{"id":"x"}`))
	if got, err := readSmall(small, make([]byte, 0, 2), 100); err != nil || string(got) != `{"id":"x"}` {
		t.Errorf("readSmall(small) = %q, %v", got, err)
	}

	big := bytes.Repeat([]byte("x"), 5000)
	bigPath := filepath.Join(dir, "big.json")
	mustWriteFile(t, bigPath, big)
	if got, err := readSmall(bigPath, nil, len(big)); err != nil || !bytes.Equal(got, big) {
		t.Errorf("readSmall(at the limit) = %d bytes, %v", len(got), err)
	}
	if _, err := readSmall(bigPath, nil, len(big)-1); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("readSmall(over the limit) = %v, want a limit error", err)
	}
	if _, err := readSmall(dir, nil, 100); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("readSmall(folder) = %v, want not a regular file", err)
	}
	if _, err := readSmall(filepath.Join(dir, "none.json"), nil, 100); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("readSmall(missing) = %v, want ErrNotExist", err)
	}

	link := filepath.Join(dir, "link.json")
	symlinkOrSkip(t, small, link)
	if got, err := readSmall(link, nil, 100); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("readSmall(symlink) = %q, %v; want not a regular file", got, err)
	}
}
