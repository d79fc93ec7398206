package main

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/internal/config"
	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
	"github.com/fusou-proxy/fusou-proxy/pending"
)

// globals are the flags every command accepts.
type globals struct {
	configFile string
	dataDir    string
	logLevel   string
	logFormat  string

	stdin          io.Reader
	stdout, stderr io.Writer
}

func newRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "fusou-proxy",
		Short:         "Local HTTPS proxy that syncs KanColle's game assets to FUSOU",
		Example:       "  fusou-proxy run\n  fusou-proxy status",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobraArgs(cobra.NoArgs), // an unknown command is a usage error
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return usageError{fmt.Errorf("a command is required")}
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "configuration file (default: ./configs.toml, then <data-dir>/configs.toml)")
	pf.StringVar(&g.dataDir, "data-dir", "", "data directory (default: $"+config.DataDirEnv+", app.data_dir, or "+nextStepHints(runtime.GOOS).dataDir+")")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&g.logFormat, "log-format", "", "log format: console or json (default: console on a terminal, else json)")

	root.AddCommand(
		newRunCommand(g),
		newConfigCommand(g),
		newCACommand(g),
		newPendingCommand(g),
		newSessionCommand(g),
		newRetryCommand(g),
		newStatusCommand(g),
		newVersionCommand(g),
	)
	return root
}

// load reads the configuration as the global flags say. When the default data directory is in
// use, this program's files are first moved out of the earlier default (SPEC §2), so that no
// command starts a new data directory beside them.
func (g *globals) load() (*config.Loaded, error) {
	cfg, err := config.Load(g.sources())
	if err != nil {
		return nil, err
	}
	moved, err := g.moveOldDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if slices.Contains(moved, datadir.ConfigFile) {
		return config.Load(g.sources()) // the moved configs.toml is the data directory's now
	}
	return cfg, nil
}

// moveOldDataDir moves this program's files from <config dir>/fusou-app to dataDir when dataDir
// is the default, <config dir>/fusou-proxy, and logs it in one line.
func (g *globals) moveOldDataDir(dataDir string) ([]string, error) {
	def, err := datadir.Default()
	if err != nil || dataDir != def {
		return nil, nil
	}
	old, err := datadir.OldDefault()
	if err != nil {
		return nil, nil
	}
	moved, err := datadir.MoveOldDefault(old, def, pending.MoveOwnEntries)
	if errors.Is(err, pending.ErrLocked) {
		return nil, fmt.Errorf("move data from %s to %s: %w: stop the fusou-proxy running from %s first", old, def, err, old)
	}
	if err != nil {
		return nil, fmt.Errorf("move data from %s to %s: %w", old, def, err)
	}
	if len(moved) > 0 {
		log, err := g.logger()
		if err != nil {
			return nil, err
		}
		log.Info("Moved fusou-proxy's files to its own data directory", zap.String("from", old),
			zap.String("to", def), zap.Strings("moved", moved))
		_ = log.Sync()
	}
	return moved, nil
}

func (g *globals) sources() config.Sources {
	return config.Sources{File: g.configFile, DataDir: g.dataDir}
}

// logger builds the process's logger from --log-level and --log-format.
func (g *globals) logger() (*zap.Logger, error) {
	l, err := newLogger(g.stderr, g.logLevel, g.logFormat)
	if err != nil {
		return nil, usageError{fmt.Errorf("logging: %w", err)}
	}
	return l, nil
}

// cobraArgs wraps a cobra.PositionalArgs so that its errors are usage errors (exit 2).
func cobraArgs(f cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := f(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
