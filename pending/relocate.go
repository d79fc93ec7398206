package pending

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fusou-proxy/fusou-proxy/internal/atomicfile"
)

// MoveOwnEntries moves what this program wrote in the pending folder from into the folder to,
// for the one-time move of the data directory away from the FUSOU app's (SPEC §2): its entries
// (their .json has our last_error field), rejected/ and corrupt/. The app's own entries stay,
// for Import. It holds from's lock meanwhile, so it fails with ErrLocked while a fusou-proxy
// uses the folder. Each .bin moves before its .json, so an interrupted move leaves the .json in
// from, and running it again finishes it. It returns how many entries moved.
func MoveOwnEntries(from, to string) (int, error) {
	dirents, err := os.ReadDir(from)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", from, err)
	}
	unlock, err := lockExisting(filepath.Join(from, lockName))
	if err != nil {
		return 0, fmt.Errorf("lock %s: %w", from, err)
	}
	defer unlock()
	if err := os.MkdirAll(to, dirMode); err != nil {
		return 0, fmt.Errorf("create %s: %w", to, err)
	}
	moved := 0
	for _, d := range dirents {
		name := d.Name()
		var err error
		switch {
		case name == rejectedDir || name == corruptDir:
			err = moveInto(from, to, name)
		case strings.HasPrefix(name, tempPrefix):
			err = removeIfExists(filepath.Join(from, name)) // an interrupted write of ours
		case strings.HasSuffix(name, ".json") && writtenByUs(filepath.Join(from, name)):
			stem := strings.TrimSuffix(name, ".json")
			if err = moveInto(from, to, binName(stem)); err == nil {
				err = moveInto(from, to, name)
				moved++
			}
		case strings.HasSuffix(name, ".bin") && exists(filepath.Join(to, strings.TrimSuffix(name, ".bin")+".json")):
			err = moveInto(from, to, name) // its .json moved in a run that was interrupted
		}
		if err != nil {
			return moved, err
		}
	}
	return moved, syncDir(to)
}

// lockExisting takes the store lock of an existing store folder (one without a .lock file was
// never a store of ours, and is not written to); unlock releases it.
func lockExisting(path string) (unlock func(), err error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	f, err := lockFolder(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	return func() { _ = f.Close() }, nil
}

// writtenByUs reports whether the .json at path is one this program wrote: only it writes
// last_error. An unreadable one is left where it is.
func writtenByUs(path string) bool {
	data, err := readSmall(path, nil, maxMetaBytes)
	if err != nil {
		return false
	}
	var f metaFile
	return json.Unmarshal(data, &f) == nil && f.LastError != nil
}

// moveInto moves from/name to to/name; a name already gone is not an error.
func moveInto(from, to, name string) error {
	err := atomicfile.Move(filepath.Join(from, name), filepath.Join(to, name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("move %s: %w", name, err)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
