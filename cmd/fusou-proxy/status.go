package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/fusou-proxy/fusou-proxy/retry"
)

// statusDoc is the part of GET /v1/status the CLI reads (see statusSource in app.go).
type statusDoc struct {
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Session       struct {
		Present          bool   `json:"present"`
		Kind             string `json:"kind"`
		ExpiresAt        string `json:"expires_at"`
		DatasetToken     bool   `json:"dataset_token"`
		DatasetExpiresAt string `json:"dataset_expires_at"`
	} `json:"session"`
	CA struct {
		RotateAdvice string `json:"rotate_advice"`
	} `json:"ca"`
	Pending struct {
		Count  int    `json:"count"`
		Bytes  int64  `json:"bytes"`
		Oldest string `json:"oldest"`
	} `json:"pending"`
	Retry retry.Status     `json:"retry"`
	Sync  map[string]int64 `json:"sync"`
}

// pollInterval is how often `retry --wait` asks for progress.
const pollInterval = 200 * time.Millisecond

func newStatusCommand(g *globals) *cobra.Command {
	var raw bool
	cmd := &cobra.Command{
		Use:     "status",
		Example: "  fusou-proxy status\n  fusou-proxy status --json",
		Short:   "Show the running instance's status",
		Args:    cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var doc json.RawMessage
			if err := c.do(http.MethodGet, "/v1/status", nil, &doc); err != nil {
				return err
			}
			if raw {
				_, err := fmt.Fprintf(g.stdout, "%s\n", doc)
				return err
			}
			var st statusDoc
			if err := json.Unmarshal(doc, &st); err != nil {
				return fmt.Errorf("decode status: %w", err)
			}
			printStatus(g, st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&raw, "json", false, "print the status document as JSON")
	return cmd
}

// printSession says which kind of session is held and when each token expires.
func printSession(w io.Writer, st statusDoc) {
	s := st.Session
	if !s.Present {
		fmt.Fprintln(w, "session:  none (uploads wait in the outbox; see `fusou-proxy session set`)")
		return
	}
	kind := "refreshed by its caller (the FUSOU app)"
	if s.Kind == "proxy" {
		kind = "owned and refreshed by the proxy"
	}
	exp := "unknown"
	if s.ExpiresAt != "" {
		exp = s.ExpiresAt
	}
	fmt.Fprintf(w, "session:  set, %s; access token expires %s\n", kind, exp)
	switch {
	case !s.DatasetToken:
		fmt.Fprintln(w, "dataset:  no dataset token: nothing can be uploaded until a session with one is posted")
	case s.DatasetExpiresAt != "":
		fmt.Fprintf(w, "dataset:  token expires %s\n", s.DatasetExpiresAt)
	default:
		fmt.Fprintln(w, "dataset:  token set, expiry unknown")
	}
}

func printStatus(g *globals, st statusDoc) {
	w := g.stdout
	fmt.Fprintf(w, "fusou-proxy %s, up %s\n", st.Version, (time.Duration(st.UptimeSeconds) * time.Second).String())
	printSession(w, st)
	if st.CA.RotateAdvice != "" {
		fmt.Fprintf(w, "ca:       %s\n", st.CA.RotateAdvice)
	}
	fmt.Fprintf(w, "pending:  %d entries, %d bytes", st.Pending.Count, st.Pending.Bytes)
	if st.Pending.Oldest != "" {
		fmt.Fprintf(w, ", oldest %s", st.Pending.Oldest)
	}
	fmt.Fprintln(w)
	if p := st.Retry.Progress; st.Retry.Running && p != nil {
		fmt.Fprintf(w, "retry:    pass %d running, %d/%d\n", p.Seq, p.Done, p.Total)
	}
	if l := st.Retry.LastPass; l != nil {
		fmt.Fprintf(w, "last pass: %s\n", passLine(*l))
	}
	if len(st.Sync) > 0 {
		fmt.Fprintf(w, "sync:     captured %d, uploaded %d, already on server %d, failed %d, shed %d\n",
			st.Sync["captured"], st.Sync["uploaded"], st.Sync["already_known"], st.Sync["failed"], st.Sync["shed"])
		if n := st.Sync["queued"]; n > 0 {
			fmt.Fprintf(w, "queued:   %d captures waiting for their commit\n", n)
		}
	}
}

func passLine(l retry.Summary) string {
	s := fmt.Sprintf("#%d (%s) succeeded %d, failed %d, rejected %d, discarded %d, remaining %d, took %s",
		l.Seq, l.Reason, l.Succeeded, l.Failed, l.Rejected, l.Discarded, l.Remaining, l.Duration.Round(time.Millisecond))
	if l.Stopped != "" {
		s += ", stopped: " + l.Stopped
	}
	return s
}

func newRetryCommand(g *globals) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:     "retry [--wait]",
		Example: "  fusou-proxy retry --wait",
		Short:   "Ask the running instance for a retry pass now (due times ignored)",
		Args:    cobraArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var ans struct {
				Started bool   `json:"started"`
				Pass    uint64 `json:"pass"`
			}
			if err := c.do(http.MethodPost, "/v1/retry", nil, &ans); err != nil {
				return err
			}
			if !wait {
				if ans.Started {
					fmt.Fprintf(g.stdout, "retry pass %d started\n", ans.Pass)
				} else {
					fmt.Fprintf(g.stdout, "a pass is running; pass %d is queued after it\n", ans.Pass)
				}
				return nil
			}
			return waitForPass(g, c, ans.Pass)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the pass to finish, showing progress, and print its summary")
	return cmd
}

// passOf returns pass seq's summary from the recent passes, or the last pass's when seq is no
// longer among them.
func passOf(st statusDoc, seq uint64) retry.Summary {
	for _, p := range st.Retry.Recent {
		if p.Seq == seq {
			return p
		}
	}
	return *st.Retry.LastPass
}

func stoppedNote(stopped string) string {
	if stopped == "" {
		return ""
	}
	return ", stopped: " + stopped
}

// waitForPass polls the status until pass seq has ended, printing progress on stderr, and fails
// (exit code 1) when that pass left entries undelivered.
func waitForPass(g *globals, c *controlClient, seq uint64) error {
	lastShown := ""
	for {
		var st statusDoc
		if err := c.do(http.MethodGet, "/v1/status", nil, &st); err != nil {
			return err
		}
		if l := st.Retry.LastPass; l != nil && l.Seq >= seq {
			sum := passOf(st, seq)
			fmt.Fprintf(g.stdout, "pass %s\n", passLine(sum))
			if sum.Failed > 0 || sum.Rejected > 0 || sum.Stopped != "" {
				return fmt.Errorf("retry pass %d did not deliver everything (failed %d, rejected %d%s)",
					sum.Seq, sum.Failed, sum.Rejected, stoppedNote(sum.Stopped))
			}
			return nil
		}
		if p := st.Retry.Progress; p != nil {
			line := fmt.Sprintf("pass %d: %d/%d", p.Seq, p.Done, p.Total)
			if line != lastShown {
				fmt.Fprintln(g.stderr, line)
				lastShown = line
			}
		}
		time.Sleep(pollInterval) // polling a remote process: nothing to wait on but time
	}
}
