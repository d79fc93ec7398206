// Command apisink is the FUSOU asset-sync API of bench/run.sh and
// bench/soak.sh: the in-process fake of package assettest served on a
// loopback address, with optional random faults.
//
// It serves the fake's routes (the upload endpoint answers a relative
// uploadUrl, so both stages come to this listener), GET /stats, the fake's
// counters as JSON, and GET /session, a new sign-in on the fake as the body
// `fusou session set` reads: {"access_token","refresh_token","dataset_token"}.
// The fake accepts only tokens it minted, so the scripts post one of these.
// Access tokens live a day here, so that a session outlives a soak's cycle.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
	"github.com/fusou-proxy/fusou-proxy/bench/internal/serve"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "apisink:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	fail := flag.Float64("fail", 0, "fraction of upload-route requests answered 503 (Retry-After: 1)")
	reset := flag.Float64("reset", 0, "fraction of upload-route requests whose connection is reset")
	slow := flag.Duration("slow", 0, "delay added to a further -slow-fraction of requests")
	slowFrac := flag.Float64("slow-fraction", 0, "fraction of requests delayed by -slow")
	flag.Parse()

	fake := assettest.NewServer()
	defer fake.Close()
	fake.SetRelativeUploadURL(true)
	fake.SetAccessTokenTTL(24 * time.Hour)
	if *fail > 0 || *reset > 0 || *slowFrac > 0 {
		fault := func(*http.Request, int) *assettest.Fault {
			switch x := rand.Float64(); {
			case x < *fail:
				return &assettest.Fault{Status: http.StatusServiceUnavailable, RetryAfter: "1"}
			case x < *fail+*reset:
				return &assettest.Fault{Reset: true}
			case x < *fail+*reset+*slowFrac:
				return &assettest.Fault{Delay: *slow}
			}
			return nil
		}
		fake.SetFaultFunc(assettest.Handshake, fault)
		fake.SetFaultFunc(assettest.Upload, fault)
		fake.SetFaultFunc(assettest.Keys, fault)
	}

	mux := http.NewServeMux()
	mux.Handle("/", fake)
	mux.HandleFunc("GET /session", func(w http.ResponseWriter, _ *http.Request) {
		tok := fake.NewSession()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"access_token": tok.Access, "refresh_token": tok.Refresh, "dataset_token": tok.Dataset,
		})
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int{
			"handshakes": fake.Requests(assettest.Handshake),
			"uploads":    fake.Requests(assettest.Upload),
			"keys":       fake.Requests(assettest.Keys),
			"stored":     fake.Uploads(),
		})
	})

	return serve.UntilSignal(*listen, mux, func(a net.Addr) string { return "http://" + a.String() })
}
