// Package assets owns what fusou-proxy knows about game assets and the
// FUSOU asset-sync API: the asset record (Asset), the session holding the
// user's tokens (SessionHolder), the uploader, which is the one code path
// that talks to the API (Uploader), the classification of its outcomes
// (Classify, Result) and the remote index of stored keys that lets known
// assets be skipped without a request (Index).
//
// Start with Uploader.Upload: stage 1 (a JSON handshake) and stage 2 (the
// bytes, streamed from an io.ReadSeeker) as SPEC §5 describes them, a few
// quick in-call retries through go-retryablehttp, and a Result whose Class
// tells the caller what to do with its pending entry: delete it (Success),
// keep it and wait for a session (Auth), keep it and count an attempt
// (Transient), or move it aside (Permanent).
//
// The fake server in package assettest models the API for tests.
//
// No token ever leaves this package in a log line, an error, a Result or a
// file: Session and SessionHolder redact themselves when printed or
// marshalled.
package assets
