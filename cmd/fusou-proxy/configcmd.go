package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newConfigCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect the configuration",
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "show",
		Example: "  fusou-proxy config show\n  FUSOU_APP_ASSET_SYNC_RETRY_MAX_ATTEMPTS=8 fusou-proxy config show",
		Short:   "Print the effective configuration (secrets redacted)",
		Args:    cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			src := cfg.File
			if src == "" {
				src = "built-in defaults (no configs.toml found)"
			}
			fmt.Fprintf(g.stdout, "# source: %s\n# data directory: %s\n", src, cfg.DataDir)
			for _, w := range cfg.Warnings {
				fmt.Fprintf(g.stdout, "# warning: %s\n", w)
			}
			return cfg.WriteTOML(g.stdout)
		},
	})
	return cmd
}
