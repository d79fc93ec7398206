package pending

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Quarantine folders: entries the server refused, and entries that could not be read.
const (
	Rejected = rejectedDir
	Corrupt  = corruptDir
)

// Quarantined is an entry of rejected/ or corrupt/, as far as its files tell. A corrupt entry's
// .json may not parse; then only its ID (the file stem) and size are known.
type Quarantined struct {
	Where     string `json:"where"` // Rejected or Corrupt
	ID        string `json:"id"`
	Key       string `json:"key"`       // "" when unknown
	Size      int64  `json:"file_size"` // of the .bin, -1 when there is none
	CreatedAt int64  `json:"created_at"`
	LastError string `json:"last_error"`
}

// ListQuarantined lists the entries of dir's rejected/ and corrupt/ folders, by folder then ID.
// It only reads, and needs no lock: it works while a proxy runs.
func ListQuarantined(dir string) ([]Quarantined, error) {
	var out []Quarantined
	for _, where := range []string{Rejected, Corrupt} {
		list, err := listFolder(filepath.Join(dir, where), where)
		if err != nil {
			return nil, err
		}
		out = append(out, list...)
	}
	return out, nil
}

// listFolder reads one quarantine folder, one Quarantined per file stem.
func listFolder(dir, where string) ([]Quarantined, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", where, err)
	}
	byID := map[string]*Quarantined{}
	for _, d := range ents {
		stem, ext := strings.TrimSuffix(d.Name(), filepath.Ext(d.Name())), filepath.Ext(d.Name())
		if d.IsDir() || (ext != ".json" && ext != ".bin") || strings.HasPrefix(stem, tempPrefix) {
			continue
		}
		q := byID[stem]
		if q == nil {
			q = &Quarantined{Where: where, ID: stem, Size: -1}
			byID[stem] = q
		}
		if ext == ".bin" {
			if fi, err := d.Info(); err == nil {
				q.Size = fi.Size()
			}
			continue
		}
		readQuarantinedMeta(filepath.Join(dir, d.Name()), q)
	}
	out := make([]Quarantined, 0, len(byID))
	for _, q := range byID {
		out = append(out, *q)
	}
	slices.SortFunc(out, func(a, b Quarantined) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// readQuarantinedMeta fills in what the .json at path says, best effort: a corrupt one may say
// nothing readable.
func readQuarantinedMeta(path string, q *Quarantined) {
	data, err := readSmall(path, nil, maxMetaBytes)
	if err != nil {
		return
	}
	var f metaFile
	if json.Unmarshal(data, &f) != nil {
		return
	}
	q.CreatedAt = f.CreatedAt
	if f.LastError != nil {
		q.LastError = *f.LastError
	}
	if f.Context != nil {
		if c, _, _, err := decodeContext(*f.Context); err == nil {
			q.Key = c.Key
		}
	}
}

// PurgeQuarantined removes every file of the store's rejected/ (Rejected) or corrupt/ (Corrupt)
// folder and returns how many entries went.
func (s *Store) PurgeQuarantined(where string) (int, error) {
	if where != Rejected && where != Corrupt {
		return 0, fmt.Errorf("purge: no quarantine folder %q", where)
	}
	if err := s.begin(true); err != nil {
		return 0, fmt.Errorf("purge %s: %w", where, err)
	}
	defer s.life.RUnlock()
	list, err := listFolder(s.path(where), where)
	if err != nil {
		return 0, err
	}
	for _, q := range list {
		for _, name := range []string{q.ID + ".json", q.ID + ".bin"} {
			if err := removeIfExists(s.path(where, name)); err != nil {
				return 0, fmt.Errorf("purge %s: %w", where, err)
			}
		}
	}
	if len(list) > 0 {
		if err := s.fs.SyncDir(s.path(where)); err != nil {
			return 0, fmt.Errorf("purge %s: %w", where, err)
		}
	}
	return len(list), nil
}
