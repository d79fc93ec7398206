package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/internal/config"
	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
	"github.com/fusou-proxy/fusou-proxy/pending"
	"github.com/fusou-proxy/fusou-proxy/retry"
)

// purgeBarThreshold is the purge size from which a progress bar is drawn.
const purgeBarThreshold = 200

func newPendingCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "pending", Short: "Inspect, purge or import pending uploads (works on the store directly)"}

	list := &cobra.Command{
		Use:     "list",
		Example: "  fusou-proxy pending list",
		Short:   "List pending uploads, oldest first (works while the proxy runs)",
		Args:    cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			st, err := g.openStore(true)
			if err != nil {
				return err
			}
			defer st.Close()
			return listPending(g.stdout, st)
		},
	}
	show := &cobra.Command{
		Use:     "show ID",
		Example: "  fusou-proxy pending show 0b6f3c1e-7a52-4f0e-9c1d-2f8a4d5e6b7c",
		Short:   "Print one pending upload's metadata",
		Args:    cobraArgs(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, args []string) error {
			st, err := g.openStore(true)
			if err != nil {
				return err
			}
			defer st.Close()
			return showPending(g.stdout, st, args[0])
		},
	}
	var expired, all, rejected, corrupt bool
	purge := &cobra.Command{
		Use:     "purge --expired|--all|--rejected|--corrupt",
		Short:   "Delete pending uploads: those past ttl_seconds or max_attempts, or all; or the rejected/ or corrupt/ entries (needs the proxy stopped)",
		Example: "  fusou-proxy pending purge --expired\n  fusou-proxy pending purge --rejected",
		Args:    cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			if n := countTrue(expired, all, rejected, corrupt); n != 1 {
				return usageError{errors.New("pending purge: give exactly one of --expired, --all, --rejected or --corrupt")}
			}
			cfg, err := g.load()
			if err != nil {
				return err
			}
			st, err := openPendingStore(cfg, false, nil)
			if err != nil {
				return err
			}
			defer st.Close()
			if rejected || corrupt {
				where := map[bool]string{true: pending.Rejected, false: pending.Corrupt}[rejected]
				n, err := st.PurgeQuarantined(where)
				fmt.Fprintf(g.stdout, "purged %d %s entries\n", n, where)
				return err
			}
			if expired {
				n := retry.Discard(st, time.Now(), retrySettings(cfg))
				fmt.Fprintf(g.stdout, "purged %d pending uploads\n", n)
				return nil
			}
			var bar *progressbar.ProgressBar
			n, err := st.Purge(func(done, total int) {
				if total < purgeBarThreshold {
					return
				}
				if bar == nil {
					bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(g.stderr),
						progressbar.OptionSetDescription("purging"), progressbar.OptionShowCount(),
						progressbar.OptionClearOnFinish())
				}
				_ = bar.Set(done)
			})
			if bar != nil {
				_ = bar.Finish()
			}
			fmt.Fprintf(g.stdout, "purged %d pending uploads\n", n)
			return err
		},
	}
	purge.Flags().BoolVar(&expired, "expired", false, "only entries past ttl_seconds or max_attempts")
	purge.Flags().BoolVar(&all, "all", false, "every entry")
	purge.Flags().BoolVar(&rejected, "rejected", false, "the entries the server refused (rejected/)")
	purge.Flags().BoolVar(&corrupt, "corrupt", false, "the entries that could not be read (corrupt/)")
	cmd.AddCommand(list, show, purge, newImportCommand(g))
	return cmd
}

// listPending prints the entries to upload, oldest first, then the unsupported ones, marked.
func listPending(w io.Writer, st *pending.Store) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKEY\tSIZE\tCREATED\tATTEMPTS\tLAST ERROR")
	for _, e := range st.List() {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", e.ID, e.Context.Key, e.Context.FileSize,
			e.Created().UTC().Format(time.RFC3339), e.AttemptCount, e.LastError)
	}
	unsupported := st.Unsupported()
	for _, e := range unsupported {
		fmt.Fprintf(tw, "%s\tunsupported (%s)\t-\t%s\t%d\t%s\n", e.ID, e.Unsupported,
			e.Created().UTC().Format(time.RFC3339), e.AttemptCount, e.LastError)
	}
	quarantined, err := pending.ListQuarantined(st.Dir())
	if err != nil {
		return err
	}
	for _, q := range quarantined {
		fmt.Fprintf(tw, "%s\t%s (%s)\t%s\t%s\t-\t%s\n", q.ID, orUnknown(q.Key), q.Where, sizeText(q.Size),
			time.Unix(q.CreatedAt, 0).UTC().Format(time.RFC3339), q.LastError)
	}
	s := st.Stats()
	fmt.Fprintf(tw, "\n%d entries, %d bytes\n", s.Count, s.Bytes)
	if n := len(unsupported); n > 0 {
		fmt.Fprintf(tw, "%d unsupported (not assets: never uploaded, removed at ttl_seconds)\n", n)
	}
	if n := len(quarantined); n > 0 {
		fmt.Fprintf(tw, "%d in rejected/ or corrupt/ (never retried; `pending purge --rejected|--corrupt` removes them)\n", n)
	}
	return tw.Flush()
}

// showPending prints one entry's metadata, its context decoded; an unsupported entry is marked
// and keeps its context as written.
func showPending(w io.Writer, st *pending.Store, id string) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	e, err := st.Get(id)
	if err == nil {
		return enc.Encode(struct {
			pending.Meta
			Context pending.Context `json:"context"`
		}{e.Meta, e.Context})
	}
	if !errors.Is(err, pending.ErrNotFound) {
		return err
	}
	for _, e := range st.Unsupported() {
		if e.ID == id {
			return enc.Encode(struct {
				pending.Meta
				Unsupported string `json:"unsupported"`
			}{e.Meta, e.Unsupported})
		}
	}
	quarantined, err := pending.ListQuarantined(st.Dir())
	if err != nil {
		return err
	}
	for _, q := range quarantined {
		if q.ID == id {
			return enc.Encode(q)
		}
	}
	return fmt.Errorf("no pending upload %s", id)
}

func countTrue(flags ...bool) (n int) {
	for _, f := range flags {
		if f {
			n++
		}
	}
	return n
}

func orUnknown(s string) string {
	if s == "" {
		return "(unreadable)"
	}
	return s
}

func sizeText(n int64) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// openStore opens <data_dir>/pending_uploads with the configured limits; readOnly works
// beside a running proxy, otherwise the store's lock is taken.
func (g *globals) openStore(readOnly bool) (*pending.Store, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, err
	}
	return openPendingStore(cfg, readOnly, nil)
}

// openPendingStore is openStore for a loaded configuration, the store logging to log (nil:
// nowhere).
func openPendingStore(cfg *config.Loaded, readOnly bool, log *zap.Logger) (*pending.Store, error) {
	r := cfg.App.AssetSync.Retry
	st, err := pending.Open(pending.Options{
		Dir:      filepath.Join(cfg.DataDir, datadir.PendingDir),
		MaxFiles: r.MaxPendingFiles,
		MaxBytes: r.MaxPendingBytes,
		ReadOnly: readOnly,
		Logger:   log,
	})
	if errors.Is(err, pending.ErrLocked) {
		return nil, fmt.Errorf("%w: stop the running fusou-proxy first", err)
	}
	return st, err
}
