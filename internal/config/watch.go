package config

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchSettle is how long a file must be quiet after a change before it is read again:
// editors save in several writes (truncate, write, rename), and a half-written file must not
// be judged.
const watchSettle = 200 * time.Millisecond

// Watch calls onChange with a fresh Load each time the configuration file changes, until ctx
// ends. It watches the file that loaded was read from, or, when none was, the one
// <data_dir>/configs.toml would be. onChange gets the Load error for a file that does not
// validate, so the caller can keep its running settings and say which key is wrong.
//
// It watches the file's folder rather than the file, as viper's WatchConfig does, so that an
// editor replacing the file by rename is seen too; unlike viper's watcher it stops with ctx.
func Watch(ctx context.Context, src Sources, loaded *Loaded, onChange func(*Loaded, error)) error {
	file := loaded.File
	if file == "" {
		file = filepath.Join(loaded.DataDir, FileName)
	}
	file, err := filepath.Abs(file)
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	if err := w.Add(filepath.Dir(file)); err != nil {
		w.Close()
		return fmt.Errorf("watch config folder: %w", err)
	}
	if src.File == "" {
		src.File = file // from now on, this file: the search order was settled at start-up
	}
	go func() {
		defer w.Close()
		settle := time.NewTimer(time.Hour)
		settle.Stop()
		for {
			select {
			case <-ctx.Done():
				settle.Stop()
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Clean(ev.Name) == file && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
					settle.Reset(watchSettle)
				}
			case <-w.Errors:
			case <-settle.C:
				next, err := Load(src)
				onChange(next, err)
			}
		}
	}()
	return nil
}
