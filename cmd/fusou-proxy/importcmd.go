package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
	"github.com/fusou-proxy/fusou-proxy/pending"
)

// fusouSearchDepth is how many folder levels below fusou-app/ the default import looks for the
// app's pending folders.
const fusouSearchDepth = 3

func newImportCommand(g *globals) *cobra.Command {
	var move, force bool
	cmd := &cobra.Command{
		Use:     "import [DIR]",
		Example: "  fusou-proxy pending import\n  fusou-proxy pending import --move ~/.config/fusou-app/pending_uploads",
		Short:   "Copy the FUSOU app's pending uploads into this store (needs the proxy stopped)",
		Long: `Copy every sound asset entry of a pending folder into this store, skipping what is
already pending or known uploaded. DIR defaults to every pending_uploads and pending folder
under the OS config dir's fusou-app/. The source is left as it was unless --move. A folder
with a .json changed in the last 10 s (a running FUSOU app) is refused unless --force.
Safe to run again: a second run imports nothing new. See docs/FORMATS.md.`,
		Args: cobraArgs(cobra.MaximumNArgs(1)),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.importPending(args, pending.ImportOptions{Move: move, Force: force})
		},
	}
	cmd.Flags().BoolVar(&move, "move", false, "remove each source entry once it is safe in this store (or known uploaded)")
	cmd.Flags().BoolVar(&force, "force", false, "import even from a folder changed in the last 10 s")
	return cmd
}

// importPending imports from the folders args names, or the FUSOU app's, and prints a summary.
func (g *globals) importPending(args []string, opts pending.ImportOptions) error {
	cfg, err := g.load()
	if err != nil {
		return err
	}
	dirs := args
	if len(dirs) == 0 {
		root, err := datadir.OldDefault()
		if err != nil {
			return err
		}
		if dirs = fusouPendingDirs(root); len(dirs) == 0 {
			fmt.Fprintf(g.stdout, "no FUSOU pending folders found under %s\n", root)
			return nil
		}
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	st, err := openPendingStore(cfg, false, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if opts.Uploaded, err = readUploaded(filepath.Join(cfg.DataDir, datadir.IndexFile)); err != nil {
		log.Warn("Ignored the asset index: uploaded assets will be imported too", zap.Error(err))
	}
	var total pending.ImportSummary
	for _, dir := range dirs {
		if abs, _ := filepath.Abs(dir); abs == st.Dir() {
			continue // the store's own folder, found under fusou-app/
		}
		fmt.Fprintf(g.stdout, "importing %s\n", dir)
		sum, err := g.importFolder(st, dir, opts)
		total = addSummary(total, sum)
		if err != nil {
			g.printSummary(total, opts.Move)
			if errors.Is(err, pending.ErrBusy) {
				return fmt.Errorf("%w; close the FUSOU app, or use --force", err)
			}
			return err
		}
	}
	return g.printSummary(total, opts.Move)
}

// importFolder imports dir, with a progress bar for a large folder.
func (g *globals) importFolder(st *pending.Store, dir string, opts pending.ImportOptions) (pending.ImportSummary, error) {
	var bar *progressbar.ProgressBar
	opts.Progress = func(done, total int) {
		if total < purgeBarThreshold {
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(g.stderr),
				progressbar.OptionSetDescription("importing"), progressbar.OptionShowCount(),
				progressbar.OptionClearOnFinish())
		}
		_ = bar.Set(done)
	}
	sum, err := st.Import(dir, opts)
	if bar != nil {
		_ = bar.Finish()
	}
	return sum, err
}

func addSummary(a, b pending.ImportSummary) pending.ImportSummary {
	return pending.ImportSummary{
		Imported:        a.Imported + b.Imported,
		AlreadyPending:  a.AlreadyPending + b.AlreadyPending,
		AlreadyUploaded: a.AlreadyUploaded + b.AlreadyUploaded,
		Unsupported:     a.Unsupported + b.Unsupported,
		Corrupt:         a.Corrupt + b.Corrupt,
		Removed:         a.Removed + b.Removed,
	}
}

func (g *globals) printSummary(s pending.ImportSummary, move bool) error {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "imported\t%d\n", s.Imported)
	fmt.Fprintf(tw, "already pending\t%d\n", s.AlreadyPending)
	fmt.Fprintf(tw, "already uploaded\t%d\n", s.AlreadyUploaded)
	fmt.Fprintf(tw, "unsupported\t%d\t(not assets: left in place)\n", s.Unsupported)
	fmt.Fprintf(tw, "corrupt\t%d\t(left in place; the log says why)\n", s.Corrupt)
	if move {
		fmt.Fprintf(tw, "removed from the source\t%d\n", s.Removed)
	}
	return tw.Flush()
}

// fusouPendingDirs returns the folders named pending_uploads or pending under root, at most
// fusouSearchDepth levels down, without looking inside them.
func fusouPendingDirs(root string) []string {
	var dirs []string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // unreadable or not a folder: look elsewhere
		}
		if name := d.Name(); path != root && (name == datadir.PendingDir || name == "pending") {
			dirs = append(dirs, path)
			return filepath.SkipDir
		}
		if rel, _ := filepath.Rel(root, path); depth(rel) >= fusouSearchDepth {
			return filepath.SkipDir
		}
		return nil
	})
	return dirs
}

// depth is the number of elements in the relative path rel ("." is 0).
func depth(rel string) int {
	if rel == "." {
		return 0
	}
	n := 1
	for _, r := range rel {
		if r == filepath.Separator {
			n++
		}
	}
	return n
}

// assetIndexFile is the part of asset_index.json (assets.Index's cache of what the server holds)
// that import needs.
type assetIndexFile struct {
	Version int `json:"version"`
	Items   []struct {
		Key         string `json:"key"`
		ContentHash string `json:"content_hash"`
	} `json:"items"`
}

// readUploaded reads the keys and hashes the server is known to hold from the asset index at
// path. A missing index knows nothing.
func readUploaded(path string) (func(key, hash string) bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f assetIndexFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("%s has version %d, want 1", path, f.Version)
	}
	known := make(map[[2]string]bool, len(f.Items))
	for _, it := range f.Items {
		if it.ContentHash != "" {
			known[[2]string{it.Key, it.ContentHash}] = true
		}
	}
	return func(key, hash string) bool { return known[[2]string{key, hash}] }, nil
}
