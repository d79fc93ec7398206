package pending

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// QuietPeriod is how long every .json of a folder must have been left alone before Import reads
// it: a newer one means a running FUSOU app may be writing there, and the app does not honour
// this store's lock.
const QuietPeriod = 10 * time.Second

// ImportOptions configures Import. The zero value copies every sound entry, leaves the source as
// it was, and refuses a folder written to within QuietPeriod.
type ImportOptions struct {
	// Move removes each source pair once its asset is safe: committed to the store (imported,
	// or already pending) or known uploaded. Unsupported and corrupt entries always stay.
	Move bool
	// Force imports even from a folder with a .json changed within QuietPeriod.
	Force bool
	// Uploaded reports whether the server is known to hold key with hash (asset_index.json);
	// such entries are not imported. nil means none is known.
	Uploaded func(key, hash string) bool
	// Progress, if not nil, is called with (0, total) and after each source entry.
	Progress func(done, total int)
}

// ImportSummary counts what Import did with each entry of the source folder.
type ImportSummary struct {
	Imported        int // copied into the store
	AlreadyPending  int // the store already holds its key and hash
	AlreadyUploaded int // ImportOptions.Uploaded knows it
	Unsupported     int // not an asset (Snapshot, Custom, no context): left in the source
	Corrupt         int // unreadable, or its .bin does not match: left in the source, logged
	Removed         int // source pairs removed (ImportOptions.Move)
}

// importOutcome is what became of one source entry.
type importOutcome int

const (
	importedEntry importOutcome = iota
	pendingEntry
	uploadedEntry
	unsupportedEntry
	corruptEntry
)

// Import copies the sound asset entries of the pending folder src (the FUSOU app's, or another
// store's; every format Open reads) into the store, each through Save's crash-safe path with its
// bytes checked against its hash. The .bin read is always src/<id>.bin. An entry the store already
// holds (same key and hash) or that opts.Uploaded knows is skipped, so a second run, or one after
// a crash, imports nothing twice. Nothing in src changes unless opts.Move. An imported entry
// starts afresh (created now, no attempts): the app's age and attempt limits are not the store's.
//
// It fails with ErrBusy, before reading any entry, when a .json in src changed within
// QuietPeriod, unless opts.Force; and with ErrFull, without evicting anything, when the store
// has no room left. The summary counts what was done before an error.
func (s *Store) Import(src string, opts ImportOptions) (ImportSummary, error) {
	var sum ImportSummary
	// Only a check: each save takes s.life itself, and holding it here too could deadlock with
	// a Close waiting in between.
	if err := s.begin(true); err != nil {
		return sum, fmt.Errorf("import: %w", err)
	}
	s.life.RUnlock()
	src, err := filepath.Abs(src)
	if err != nil {
		return sum, fmt.Errorf("import: %w", err)
	}
	if src == s.dir {
		return sum, fmt.Errorf("import: %s is the store's own folder", src)
	}
	stems, err := importStems(src, s.opts.Now(), opts.Force)
	if err != nil {
		return sum, fmt.Errorf("import %s: %w", src, err)
	}
	progress := func(int, int) {}
	if opts.Progress != nil {
		progress = opts.Progress
	}
	progress(0, len(stems))
	for i, stem := range stems {
		outcome, err := s.importEntry(src, stem, opts)
		if err != nil {
			return sum, fmt.Errorf("import %s: %w", src, err)
		}
		sum.count(outcome)
		if opts.Move && outcome <= uploadedEntry && s.removeSource(src, stem) {
			sum.Removed++
		}
		progress(i+1, len(stems))
	}
	s.log.Info("Imported pending uploads", zap.String("from", src), zap.Int("imported", sum.Imported),
		zap.Int("already_pending", sum.AlreadyPending), zap.Int("already_uploaded", sum.AlreadyUploaded),
		zap.Int("unsupported", sum.Unsupported), zap.Int("corrupt", sum.Corrupt), zap.Int("removed", sum.Removed))
	return sum, nil
}

func (sum *ImportSummary) count(o importOutcome) {
	switch o {
	case importedEntry:
		sum.Imported++
	case pendingEntry:
		sum.AlreadyPending++
	case uploadedEntry:
		sum.AlreadyUploaded++
	case unsupportedEntry:
		sum.Unsupported++
	case corruptEntry:
		sum.Corrupt++
	}
}

// importStems lists the entries of src by their .json files, sorted, after checking that none
// changed within QuietPeriod of now (unless force).
func importStems(src string, now time.Time, force bool) ([]string, error) {
	dirents, err := os.ReadDir(src)
	if err != nil {
		return nil, fmt.Errorf("read folder: %w", err)
	}
	var stems []string
	for _, d := range dirents {
		stem, ok := strings.CutSuffix(d.Name(), ".json")
		if !ok || d.IsDir() || strings.HasPrefix(stem, tempPrefix) {
			continue
		}
		if !force {
			info, err := d.Info()
			if err == nil && now.Sub(info.ModTime()) < QuietPeriod {
				return nil, fmt.Errorf("%w: %s changed at %s (is the FUSOU app running?)",
					ErrBusy, d.Name(), info.ModTime().Format(time.RFC3339))
			}
		}
		stems = append(stems, stem)
	}
	return stems, nil
}

// importEntry imports the entry stem of src. The error is the store's (a full disk, ErrFull);
// a problem with the source entry is an outcome, logged.
func (s *Store) importEntry(src, stem string, opts ImportOptions) (importOutcome, error) {
	base := filepath.Join(src, stem)
	data, err := readSmall(base+".json", nil, maxMetaBytes)
	if err != nil {
		return s.sourceCorrupt(src, stem, "read .json: "+err.Error()), nil
	}
	d, err := decodeMeta(stem, data)
	if err != nil {
		return s.sourceCorrupt(src, stem, err.Error()), nil
	}
	if d.unsupported != "" {
		return unsupportedEntry, nil
	}
	f, fi, err := openRegular(base + ".bin")
	if err != nil {
		return s.sourceCorrupt(src, stem, "open .bin: "+err.Error()), nil
	}
	defer f.Close()
	c := d.ctx
	if fi.Size() != c.FileSize {
		return s.sourceCorrupt(src, stem, fmt.Sprintf(".bin is %d bytes, context says %d", fi.Size(), c.FileSize)), nil
	}
	if c.ContentHash == "" { // the seed's format
		if c.ContentHash, err = hashFile(f); err == nil {
			_, err = f.Seek(0, io.SeekStart)
		}
		if err != nil {
			return s.sourceCorrupt(src, stem, "read .bin: "+err.Error()), nil
		}
	}
	switch {
	case opts.Uploaded != nil && opts.Uploaded(c.Key, c.ContentHash):
		return uploadedEntry, nil
	case s.Has(c.Key, c.ContentHash):
		return pendingEntry, nil
	}
	_, created, err := s.save(c, Meta{TargetURL: d.meta.TargetURL, Headers: d.meta.Headers}, f, false)
	switch {
	case errors.Is(err, ErrMismatch) || errors.Is(err, ErrInvalid):
		return s.sourceCorrupt(src, stem, err.Error()), nil
	case err != nil:
		return 0, err
	case !created:
		return pendingEntry, nil
	}
	return importedEntry, nil
}

// sourceCorrupt logs why the entry stem of src cannot be imported; it stays where it is.
func (s *Store) sourceCorrupt(src, stem, why string) importOutcome {
	s.log.Warn("Skipped corrupt entry to import", zap.String("folder", src), zap.String("id", stem),
		zap.String("reason", why))
	return corruptEntry
}

// removeSource removes an imported entry's pair from src, the .json first so that the entry ends
// before its bytes go. A failure is logged: the entry is safe in the store, and the next import
// finds it already pending and removes it then.
func (s *Store) removeSource(src, stem string) bool {
	for _, name := range []string{stem + ".json", binName(stem)} {
		if err := removeIfExists(filepath.Join(src, name)); err != nil {
			s.log.Warn("Failed to remove imported entry from its folder", zap.String("folder", src),
				zap.String("file", name), zap.Error(err))
			return false
		}
	}
	return true
}
