package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
	"github.com/fusou-proxy/fusou-proxy/pending"
)

// purgeBarThreshold is the purge size from which a progress bar is drawn.
const purgeBarThreshold = 200

func newPendingCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "pending", Short: "Inspect or purge the pending uploads (works on the store directly)"}

	list := &cobra.Command{
		Use:   "list",
		Short: "List pending uploads, oldest first (works while the proxy runs)",
		Args:  cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			st, err := g.openStore(true)
			if err != nil {
				return err
			}
			defer st.Close()
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKEY\tSIZE\tCREATED\tATTEMPTS\tLAST ERROR")
			for _, e := range st.List() {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", e.ID, e.Context.Key, e.Context.FileSize,
					e.Created().UTC().Format(time.RFC3339), e.AttemptCount, e.LastError)
			}
			s := st.Stats()
			fmt.Fprintf(tw, "\n%d entries, %d bytes\n", s.Count, s.Bytes)
			return tw.Flush()
		},
	}
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Print one pending upload's metadata",
		Args:  cobraArgs(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, args []string) error {
			st, err := g.openStore(true)
			if err != nil {
				return err
			}
			defer st.Close()
			e, err := st.Get(args[0])
			if errors.Is(err, pending.ErrNotFound) {
				return fmt.Errorf("no pending upload %s", args[0])
			}
			if err != nil {
				return err
			}
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(struct {
				pending.Meta
				Context pending.Context `json:"context"`
			}{e.Meta, e.Context})
		},
	}
	var expired, all bool
	purge := &cobra.Command{
		Use:   "purge --expired|--all",
		Short: "Delete pending uploads: those past ttl_seconds or max_attempts, or all (needs the proxy stopped)",
		Args:  cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			if expired == all {
				return usageError{errors.New("pending purge: give exactly one of --expired or --all")}
			}
			st, err := g.openStore(false)
			if err != nil {
				return err
			}
			defer st.Close()
			var bar *progressbar.ProgressBar
			n, err := st.Purge(all, func(done, total int) {
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
	cmd.AddCommand(list, show, purge)
	return cmd
}

// openStore opens <data_dir>/pending_uploads with the configured limits; readOnly works
// beside a running proxy, otherwise the store's lock is taken.
func (g *globals) openStore(readOnly bool) (*pending.Store, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, err
	}
	r := cfg.App.AssetSync.Retry
	st, err := pending.Open(pending.Options{
		Dir:         filepath.Join(cfg.DataDir, datadir.PendingDir),
		MaxFiles:    r.MaxPendingFiles,
		MaxBytes:    r.MaxPendingBytes,
		TTL:         r.TTL(),
		MaxAttempts: r.MaxAttempts,
		ReadOnly:    readOnly,
	})
	if errors.Is(err, pending.ErrLocked) {
		return nil, fmt.Errorf("%w: stop the running fusou-proxy first", err)
	}
	return st, err
}
