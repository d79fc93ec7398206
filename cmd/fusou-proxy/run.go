package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fusou-proxy/fusou-proxy/internal/config"
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
	src := g.sources()
	cfg, err := g.load()
	if err != nil {
		return err
	}
	flags := func(c *config.Loaded) {
		if listen != "" {
			c.Proxy.Listen = listen
		}
		if controlListen != "" {
			c.Control.Listen = controlListen
		}
	}
	flags(cfg)
	if err := cfg.Validate(); err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if err := datadir.Ensure(cfg.DataDir); err != nil {
		return err
	}
	if fixed, err := datadir.TightenToken(cfg.DataDir); err != nil {
		return err
	} else if fixed {
		log.Warn("control.token was readable by other users; made it 0600. Anyone who read it could use the control API: delete the file to get a new token")
	}
	token, err := datadir.ControlToken(cfg.DataDir, cfg.Control.Token)
	if err != nil {
		return err
	}
	a, err := newApp(src, cfg, flags, log, token)
	if err != nil {
		return err
	}
	if err := a.listen(); err != nil {
		a.close()
		return err
	}
	return a.serve(ctx)
}
