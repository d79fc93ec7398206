// Command fusou-proxy is the FUSOU asset-sync proxy: a local HTTPS intercepting proxy for
// KanColle that captures the game's assets and uploads them to FUSOU. See README.md.
//
// main only parses, wires and waits: each subcommand lives in its own file and returns an
// error; exitCode turns it into the process's exit status.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/fusou-proxy/fusou-proxy/internal/config"
)

// Exit codes (SPEC §9).
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Main runs the command line and returns the exit code; tests call it in-process.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "fusou-proxy: %v\n", err)
	return exitCode(err)
}

// usageError marks a mistake in how the command was called (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ue usageError
	var ce *config.Error
	var se *config.SyntaxError
	if errors.As(err, &ue) || errors.As(err, &ce) || errors.As(err, &se) {
		return exitUsage
	}
	return exitRuntime
}
