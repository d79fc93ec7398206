package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
)

func newRunCommand(g *globals) *cobra.Command {
	var listen, controlListen string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the proxy (the main job)",
		Args:  cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.run(ctx, listen, controlListen)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "proxy listen address host:port (overrides proxy.listen)")
	cmd.Flags().StringVar(&controlListen, "control-listen", "", "control endpoint address host:port (overrides control.listen)")
	return cmd
}

func (g *globals) run(ctx context.Context, listen, controlListen string) error {
	log, err := g.logger()
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing useful to do if stderr is gone
	cfg, err := g.load()
	if err != nil {
		return err
	}
	if listen != "" {
		cfg.Proxy.Listen = listen
	}
	if controlListen != "" {
		cfg.Control.Listen = controlListen
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if err := datadir.Ensure(cfg.DataDir); err != nil {
		return err
	}
	if _, err := datadir.ControlToken(cfg.DataDir, cfg.Control.Token); err != nil {
		return err
	}
	log.Info("fusou-proxy started",
		zap.String("version", version),
		zap.String("data_dir", cfg.DataDir),
		zap.String("config_file", cfg.File),
		zap.String("proxy_listen", cfg.Proxy.Listen),
		zap.String("control_listen", cfg.Control.Listen),
	)
	<-ctx.Done()
	log.Info("fusou-proxy stopped")
	return nil
}
