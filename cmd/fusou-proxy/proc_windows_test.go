package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/windows"

	"github.com/fusou-proxy/fusou-proxy/internal/private/privatetest"
)

// The platform half of the harness that starts, stops and kills fusou-proxy processes.
//
// Windows has no SIGTERM to send: a console program is asked to stop with a console control
// event, which Go delivers as os.Interrupt (Ctrl-C, Ctrl-Break) or syscall.SIGTERM (the
// console closed, logoff, shutdown). On Windows each child gets its own process group and
// Ctrl-Break, the one event that can be aimed at one group. Wine 8 delivers neither Ctrl-Break
// nor an event aimed at a group (GenerateConsoleCtrlEvent fails), and its console of a program
// started from a Unix shell delivers nothing: under wine the test process opens a console of
// its own and sends Ctrl-C to everything on it, itself included (ignored by setUpConsole).

var underWine = privatetest.UnderWine()

// setUpConsole, from TestMain, makes sure there is a console for the children to share.
func setUpConsole() error {
	kernel32 := windows.NewLazySystemDLL("kernel32.dll")
	if underWine {
		kernel32.NewProc("FreeConsole").Call()
		if r, _, err := kernel32.NewProc("AllocConsole").Call(); r == 0 {
			return fmt.Errorf("AllocConsole: %w", err)
		}
		signal.Notify(make(chan os.Signal, 1), os.Interrupt) // this process's own copy of every Ctrl-C
		return nil
	}
	kernel32.NewProc("AllocConsole").Call() // fails, harmlessly, when there is one already
	return nil
}

// prepareChild readies cmd to receive stopEvents.
func prepareChild(cmd *exec.Cmd) {
	if !underWine {
		cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP}
	}
}

// stopEvents are the ways a user or service manager asks `run` to stop: each must stop it as
// cleanly as the others. (CTRL_CLOSE_EVENT, LOGOFF and SHUTDOWN cannot be sent to a process;
// Go turns them into SIGTERM, which the Unix tests send.)
var stopEvents = map[string]func(*os.Process) error{map[bool]string{false: "Ctrl-Break", true: "Ctrl-C"}[underWine]: interrupt}

// interrupt asks a running fusou-proxy to stop: Ctrl-Break, or Ctrl-C under wine (see above).
func interrupt(p *os.Process) error {
	if underWine {
		return windows.GenerateConsoleCtrlEvent(windows.CTRL_C_EVENT, 0)
	}
	return windows.GenerateConsoleCtrlEvent(windows.CTRL_BREAK_EVENT, uint32(p.Pid))
}

// killedHard reports whether a process ended by Process.Kill, which is TerminateProcess with
// exit code 1.
func killedHard(ps *os.ProcessState) bool { return ps.ExitCode() == 1 }
