package main

import (
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

// oldSpoolDir is the folder where versions before the single commit path kept captures that
// were not committed yet (a journal and spool files).
const oldSpoolDir = "spool"

// removeOldSpool removes an earlier version's spool folder from the data dir. Nothing reads its
// journal any more; what it held was never committed, so never promised to anyone, but it is
// said out loud with what it held.
func removeOldSpool(dataDir string, log *zap.Logger) {
	dir := filepath.Join(dataDir, oldSpoolDir)
	if _, err := os.Lstat(dir); err != nil {
		return // none: the usual case
	}
	files, bytes := 0, int64(0)
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, ierr := d.Info(); ierr == nil {
				files, bytes = files+1, bytes+fi.Size()
			}
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		log.Warn("Could not remove an earlier version's spool folder", zap.String("dir", dir), zap.Error(err))
		return
	}
	if files > 0 {
		log.Warn("Removed an earlier version's spool folder: captures it held had not been committed and will be captured again when the game loads them",
			zap.String("dir", dir), zap.Int("files", files), zap.Int64("bytes", bytes))
	}
}
