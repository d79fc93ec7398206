//go:build !windows

package main

import (
	"os"
	"os/exec"
	"syscall"
)

// The platform half of the harness that starts, stops and kills fusou-proxy processes; see
// proc_windows_test.go for Windows.

const underWine = false

func setUpConsole() error { return nil }

// prepareChild readies cmd to receive stopEvents.
func prepareChild(*exec.Cmd) {}

// stopEvents are the ways a user or service manager asks `run` to stop: each must stop it as
// cleanly as the others.
var stopEvents = map[string]func(*os.Process) error{
	"SIGTERM": func(p *os.Process) error { return p.Signal(syscall.SIGTERM) },
	"SIGINT":  func(p *os.Process) error { return p.Signal(os.Interrupt) }, // Ctrl-C in a terminal
}

// interrupt asks a running fusou-proxy to stop, as a service manager does.
func interrupt(p *os.Process) error { return p.Signal(syscall.SIGTERM) }

// killedHard reports whether a process ended by SIGKILL.
func killedHard(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}
