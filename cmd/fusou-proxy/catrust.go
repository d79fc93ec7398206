package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fusou-proxy/fusou-proxy/certs"
	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
	"github.com/fusou-proxy/fusou-proxy/internal/truststore"
)

// storeFlags adds the flags that pick the trust stores. By default a player's browsers and
// OS: Java is rarely how anyone plays, and its cacerts usually belongs to root.
func storeFlags(cmd *cobra.Command, s *truststore.Stores) {
	cmd.Flags().BoolVar(&s.System, "system", true, "the OS store (Windows user roots, macOS login keychain, Linux CA folder: needs root)")
	cmd.Flags().BoolVar(&s.NSS, "nss", true, "browsers' NSS databases: Firefox, and Chrome/Chromium on Linux (needs certutil)")
	cmd.Flags().BoolVar(&s.Java, "java", false, "the cacerts of $JAVA_HOME")
}

func newCAInstallCommand(g *globals) *cobra.Command {
	var stores truststore.Stores
	cmd := &cobra.Command{
		Use:     "install",
		Example: "  fusou-proxy ca install\n  fusou-proxy ca install --system=false",
		Short:   "Trust the CA (made if missing) in the OS store and the browsers' NSS databases",
		Long: `Trust the CA (made if missing) in the OS store and the browsers' NSS databases.

Windows asks you to confirm the new root; macOS asks for your login password. On Linux the
system CA folder needs root: the exact sudo commands are printed, and the browsers' NSS
databases are updated anyway. Restart a browser that was open.`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			if stores == (truststore.Stores{}) {
				return usageError{errors.New("--system, --nss and --java are all off: nothing to do")}
			}
			cfg, err := g.load()
			if err != nil {
				return err
			}
			a, err := openCA(cfg, false)
			if err != nil {
				return err
			}
			ca := truststore.CA{Cert: a.Certificate(), File: filepath.Join(a.Dir(), certs.CertFile)}
			results := (&truststore.Env{}).Install(ca, stores)
			if err := printTrustResults(g.stdout, ca, results); err != nil {
				return err
			}
			for _, r := range results {
				if r.Outcome == truststore.Installed {
					fmt.Fprintln(g.stdout, "Restart your browser if it is open.")
					break
				}
			}
			return nil
		},
	}
	storeFlags(cmd, &stores)
	return cmd
}

func newCAUninstallCommand(g *globals) *cobra.Command {
	var stores truststore.Stores
	var certFile string
	cmd := &cobra.Command{
		Use:     "uninstall",
		Example: "  fusou-proxy ca uninstall\n  fusou-proxy ca uninstall --cert ~/.config/fusou-proxy/ca/old-20250101T000000Z/fusou-ca.pem",
		Short:   "Stop trusting the CA (or, with --cert, one kept aside by rotate) in the stores install uses",
		Args:    cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			if stores == (truststore.Stores{}) {
				return usageError{errors.New("--system, --nss and --java are all off: nothing to do")}
			}
			if certFile == "" {
				cfg, err := g.load()
				if err != nil {
					return err
				}
				certFile = filepath.Join(cfg.DataDir, datadir.CADir, certs.CertFile)
				if _, err := os.Stat(certFile); errors.Is(err, fs.ErrNotExist) {
					fmt.Fprintf(g.stdout, "no CA in %s: nothing to remove (--cert FILE names one kept aside)\n", filepath.Dir(certFile))
					return nil
				}
			}
			cert, err := readCertPEM(certFile)
			if err != nil {
				return err
			}
			ca := truststore.CA{Cert: cert, File: certFile}
			return printTrustResults(g.stdout, ca, (&truststore.Env{}).Uninstall(ca, stores))
		},
	}
	storeFlags(cmd, &stores)
	cmd.Flags().StringVar(&certFile, "cert", "", "the CA certificate (PEM) to remove, instead of the current one")
	return cmd
}

// readCertPEM reads a PEM file holding a certificate; a file holding anything else (a key)
// is refused, so only a public certificate ever reaches a trust store.
func readCertPEM(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, usageError{fmt.Errorf("%s is not a PEM certificate: give a fusou-ca.pem", file)}
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: parse certificate: %w", file, err)}
	}
	return cert, nil
}

// printTrustResults prints one line per store, with the command to run by hand under a store
// that was skipped or failed. It returns an error only when no store was left as asked.
func printTrustResults(w io.Writer, ca truststore.CA, results []truststore.Result) error {
	fmt.Fprintf(w, "%s (%s):\n", ca.Cert.Subject.CommonName, ca.File)
	ok := false
	for _, r := range results {
		line := "  " + r.Store + ": " + r.Outcome.String()
		if r.Reason != "" {
			line += ": " + r.Reason
		}
		fmt.Fprintln(w, line)
		if r.Manual != "" {
			fmt.Fprintln(w, "      by hand: "+r.Manual)
		}
		ok = ok || r.OK()
	}
	if !ok {
		return errors.New("no trust store could be updated: see why above, or \"Trust the CA\" in the README")
	}
	return nil
}

// keptAside finds the folder rotate moved the CA with certPEM into ("" if none).
func keptAside(caDir string, certPEM []byte) string {
	olds, _ := filepath.Glob(filepath.Join(caDir, "old-*", certs.CertFile))
	for _, f := range olds {
		if b, err := os.ReadFile(f); err == nil && bytes.Equal(b, certPEM) {
			return f
		}
	}
	return ""
}
