package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fusou-proxy/fusou-proxy/certs"
	"github.com/fusou-proxy/fusou-proxy/internal/config"
	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
)

func newCACommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Manage the proxy's certificate authority"}

	var der bool
	var out string
	export := &cobra.Command{
		Use:     "export",
		Example: "  fusou-proxy ca export --out fusou-ca.pem\n  fusou-proxy ca export --der --out fusou-ca.der",
		Short:   "Print the CA certificate (made if missing), to trust it by hand",
		Args:    cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			ca, err := openCA(cfg, false)
			if err != nil {
				return err
			}
			data := ca.PEM()
			if der {
				data = ca.DER()
			}
			if out == "" {
				_, err = g.stdout.Write(data)
				return err
			}
			if err := os.WriteFile(out, data, 0o644); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			fmt.Fprintf(g.stderr, "wrote %s\n", out)
			return nil
		},
	}
	export.Flags().BoolVar(&der, "der", false, "DER (binary) instead of PEM")
	export.Flags().StringVar(&out, "out", "", "write to this file instead of standard output")

	rotate := &cobra.Command{
		Use:     "rotate",
		Example: "  fusou-proxy ca rotate && fusou-proxy ca export --out fusou-ca.pem",
		Short:   "Make a new CA for the current mitm_hosts; the old one is kept aside",
		Args:    cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			caDir := filepath.Join(cfg.DataDir, datadir.CADir)
			oldPEM, readErr := os.ReadFile(filepath.Join(caDir, certs.CertFile))
			ca, err := openCA(cfg, true)
			if err != nil {
				return err
			}
			if readErr != nil {
				fmt.Fprintf(g.stdout, "new CA %q in %s: trust it with `fusou-proxy ca install`\n",
					ca.Certificate().Subject.CommonName, ca.Dir())
				return nil
			}
			fmt.Fprintf(g.stdout, "new CA %q in %s, the old one kept aside: trust the new one with `fusou-proxy ca install`; a running proxy switches to it within seconds\n",
				ca.Certificate().Subject.CommonName, ca.Dir())
			if old := keptAside(caDir, oldPEM); old != "" {
				fmt.Fprintf(g.stdout, "the old CA stays trusted until you run: fusou-proxy ca uninstall --cert \"%s\"\n", old)
			}
			return nil
		},
	}
	cmd.AddCommand(export, newCAInstallCommand(g), newCAUninstallCommand(g), rotate)
	return cmd
}

// openCA opens (or, with rotate, replaces) the CA in <data_dir>/ca for cfg's mitm_hosts.
func openCA(cfg *config.Loaded, rotate bool) (*certs.Authority, error) {
	if err := datadir.Ensure(cfg.DataDir); err != nil {
		return nil, err
	}
	opts := certs.Options{Dir: filepath.Join(cfg.DataDir, datadir.CADir), Hosts: cfg.Proxy.MITMHosts}
	if rotate {
		return certs.Rotate(opts)
	}
	return certs.Open(opts) // a CA that no longer fits says to run `fusou-proxy ca rotate`
}
