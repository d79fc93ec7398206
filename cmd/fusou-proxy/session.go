package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// sessionBody is POST /v1/session's document (SPEC §8).
type sessionBody struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresAt    any    `json:"expires_at,omitempty"`
	DatasetToken string `json:"dataset_token,omitempty"`
	AutoRefresh  *bool  `json:"auto_refresh,omitempty"`
}

// parseExpiresFlag reads --expires-at: an RFC 3339 time or Unix seconds, in the future.
func parseExpiresFlag(v string, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		n, nerr := strconv.ParseInt(v, 10, 64)
		if nerr != nil || n <= 0 || n > 1<<40 {
			return time.Time{}, fmt.Errorf("session set: --expires-at must be an RFC 3339 time (e.g. %s) or Unix seconds, got %q",
				now.Add(time.Hour).UTC().Format(time.RFC3339), v)
		}
		t = time.Unix(n, 0)
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("session set: --expires-at %s is in the past: the access token has expired", t.UTC().Format(time.RFC3339))
	}
	return t, nil
}

func newSessionCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "session", Short: "Give the running proxy your FUSOU session (never written to a file)"}
	var b sessionBody
	var expires string
	autoRefresh := true
	set := &cobra.Command{
		Use:     "set [--access-token T --refresh-token R [--dataset-token D] [--expires-at TIME]]",
		Example: "  echo '{\"access_token\":\"…\",\"refresh_token\":\"…\",\"dataset_token\":\"…\"}' | fusou-proxy session set\n  fusou-proxy session set --auto-refresh=false < session.json",
		Short:   "Post a session to the running instance; with no token flags, read a JSON document from standard input",
		Long: "Post a session to the running instance. Without --access-token, the session is read as JSON\n" +
			"from standard input ({\"access_token\",\"refresh_token\",\"expires_at\"?,\"dataset_token\"?}),\n" +
			"which keeps the tokens out of the process list.\n\n" +
			"The session is handed over for good: the proxy refreshes it before it expires (and keeps it\n" +
			"in the OS keychain with app.auth.remember_session). Pass --auto-refresh=false when another\n" +
			"program (the FUSOU app) refreshes it and posts each new one: Supabase refresh tokens are\n" +
			"single-use, so two refreshers would sign each other out.",
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if b.AccessToken == "" && b.RefreshToken == "" {
				if f, ok := g.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					fmt.Fprintln(g.stderr, "paste the session JSON, then Ctrl-D:")
				}
				dec := json.NewDecoder(io.LimitReader(g.stdin, 64<<10))
				if err := dec.Decode(&b); err != nil {
					return usageError{fmt.Errorf("session set: read the session JSON from standard input: %w", err)}
				}
			} else if expires != "" {
				t, err := parseExpiresFlag(expires, time.Now())
				if err != nil {
					return usageError{err}
				}
				b.ExpiresAt = t.UTC().Format(time.RFC3339)
			}
			if b.AutoRefresh == nil || cmd.Flags().Changed("auto-refresh") {
				b.AutoRefresh = &autoRefresh
			}
			if b.AccessToken == "" || b.RefreshToken == "" {
				return usageError{errors.New("session set: both an access token and a refresh token are needed")}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.do(http.MethodPost, "/v1/session", b, nil); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "session set; pending uploads are being retried")
			return nil
		},
	}
	set.Flags().StringVar(&b.AccessToken, "access-token", "", "FUSOU access token (visible in the process list: prefer standard input)")
	set.Flags().StringVar(&b.RefreshToken, "refresh-token", "", "FUSOU refresh token")
	set.Flags().StringVar(&b.DatasetToken, "dataset-token", "", "FUSOU dataset token (every upload needs one)")
	set.Flags().BoolVar(&autoRefresh, "auto-refresh", true, "the proxy owns the session and refreshes it (false: the caller refreshes and posts again)")
	set.Flags().StringVar(&expires, "expires-at", "", "access token expiry, RFC 3339 (optional)")

	clear := &cobra.Command{
		Use:     "clear",
		Example: "  fusou-proxy session clear",
		Short:   "Forget the session in the running instance",
		Args:    cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.do(http.MethodDelete, "/v1/session", nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "session cleared")
			return nil
		},
	}
	cmd.AddCommand(set, clear)
	return cmd
}
