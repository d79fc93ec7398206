// Package faulttest holds fusou-proxy's fault-injection suite (GitHub issue 7): the upload path
// run through Toxiproxy while the network between it and the FUSOU API misbehaves. The package
// has no code of its own; everything is in its _test.go files.
//
// Each test wires the real pieces as cmd/fusou-proxy does (a pending.Store in a temp folder, an
// assets.SessionHolder, assets.Uploader, assets.Pipeline and a retry.Service delivering through
// the pipeline) and puts an in-process Toxiproxy proxy between the uploader and the API fake
// (assettest.Server on 127.0.0.1), so both upload stages cross it. Captures are fed as the proxy
// feeds them (Pipeline.Start, Write, Finish). While a fault is on (latency, a stalled
// connection, resets, sliced packets, a bandwidth limit, the API going away mid-body) uploads may
// fail and stay pending; once it ends, forced retry passes run until the store is empty. The
// tests then check that nothing was lost or doubled: every asset is on the server exactly once,
// nothing is pending, rejected or corrupt, and the store reopens clean.
//
// Start with faults_test.go (the scenarios) and rig_test.go (the wiring); shutdown_test.go stops
// and restarts the app in the middle of a fault. The default run takes well under a minute;
// `go test ./internal/faulttest -faults.long` runs a heavier variant (more and larger assets,
// longer faults, a flapping API, every toxic at once). bugs_test.go shows known product bugs,
// skipped unless -faults.bugs is given.
package faulttest
