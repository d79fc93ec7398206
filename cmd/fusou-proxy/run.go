package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fusou-proxy/fusou-proxy/certs"
	"github.com/fusou-proxy/fusou-proxy/internal/config"
	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
)

// stopSignals end `run`, each through the same clean shutdown (app.serve) as a cancelled
// context. Ctrl-C is os.Interrupt everywhere, and so is Ctrl-Break on Windows; Go delivers
// Windows's console close, logoff and shutdown events as SIGTERM (see os/signal), after which
// Windows ends the process within seconds whatever it is doing: what was committed is safe.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM}

func newRunCommand(g *globals) *cobra.Command {
	var listen, controlListen string
	cmd := &cobra.Command{
		Use:     "run",
		Example: "  fusou-proxy run\n  fusou-proxy run --listen 127.0.0.1:8060 --log-level debug",
		Short:   "Run the proxy (the main job)",
		Args:    cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), stopSignals...)
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
		log.Warn("control.token was readable by other users; made it private. Anyone who read it could use the control API: delete the file to get a new token")
	}
	token, err := datadir.ControlToken(cfg.DataDir, cfg.Control.Token)
	if err != nil {
		return err
	}
	_, caErr := os.Stat(filepath.Join(cfg.DataDir, datadir.CADir, certs.CertFile))
	firstRun := errors.Is(caErr, fs.ErrNotExist)
	a, err := newApp(src, cfg, flags, log, token)
	if err != nil {
		return err
	}
	if err := a.listen(); err != nil {
		a.close()
		return err
	}
	if firstRun {
		printNextSteps(g.stderr, cfg.DataDir, a.controlLn.Addr().String(), a.proxyLn.Addr().String())
	}
	return a.serve(ctx)
}

// printNextSteps tells a new user, on the run that made the CA, what is left to do.
func printNextSteps(w io.Writer, dataDir, controlAddr, proxyAddr string) {
	io.WriteString(w, nextSteps(runtime.GOOS, dataDir, controlAddr, proxyAddr))
}

func nextSteps(goos, dataDir, controlAddr, proxyAddr string) string {
	h := nextStepHints(goos)
	pac := "http://" + controlAddr + "/proxy.pac"
	return fmt.Sprintf(`
fusou-proxy is running; its files are in %s. Next steps:
  1. Trust its CA (it can only vouch for the game's hosts): run
       fusou-proxy ca install
     which adds it to %s.
     Or import the file from "fusou-proxy ca export --out fusou-ca.pem" by hand
     (the README's "Trust the CA" has each browser).
  2. Point the browser at %s:
     %s.
     Firefox has its own: Settings → Network Settings → "Automatic proxy configuration URL".
     Or use %s as the HTTP and HTTPS proxy.
  3. Give it your FUSOU session: the FUSOU app posts it, or see "fusou-proxy session set --help".
  Stop it with Ctrl-C; it keeps whatever still waits to be uploaded.

`, dataDir, h.trust, pac, fmt.Sprintf(h.proxy, pac), proxyAddr)
}

// osHints are what the user-facing texts say differs between operating systems.
type osHints struct {
	dataDir string // the default data directory, as the OS's own docs would write it
	proxy   string // where the PAC URL goes; %s is the URL
	trust   string // where `ca install` puts the CA
}

// nextStepHints are goos's hints; any OS but Windows and macOS gets Linux's.
func nextStepHints(goos string) osHints {
	switch goos {
	case "windows":
		return osHints{
			dataDir: `%APPDATA%\` + datadir.DefaultName,
			proxy:   `Windows Settings → Network & internet → Proxy → "Use setup script", script address %s (Edge and Chrome follow it)`,
			trust:   "your Windows user's trusted roots (Windows asks you to confirm)",
		}
	case "darwin":
		return osHints{
			dataDir: "~/Library/Application Support/" + datadir.DefaultName,
			proxy:   `System Settings → Network → your network → Details → Proxies → "Automatic proxy configuration", URL %s (Safari and Chrome follow it)`,
			trust:   "your login keychain (macOS asks for your password), and Firefox if certutil is installed (brew install nss)",
		}
	}
	return osHints{
		dataDir: "~/.config/" + datadir.DefaultName + " ($XDG_CONFIG_HOME/" + datadir.DefaultName + " when set)",
		proxy:   "start Chromium with --proxy-pac-url=%s (or set it in your desktop's network proxy settings)",
		trust:   "Firefox's and Chrome/Chromium's certificate databases (needs certutil: apt install libnss3-tools)",
	}
}
