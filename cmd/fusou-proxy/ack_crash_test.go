package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// An upload the server acknowledged is never sent again after a crash (SPEC §6): 150 assets
// are uploaded, the proxy is killed with SIGKILL a second after the last acknowledgement, and
// after a restart nothing is pending and not one request reaches the upload endpoint.
func TestAcknowledgedUploadsStayDoneAfterKill(t *testing.T) {
	game, api := newAssetServer(t), assettest.NewServer()
	defer api.Close()
	in := startInstance(t, game, api, "")
	in.cli(sessionJSON(api.NewSession()), "session", "set")
	c := in.client()
	const n = 150
	for i := range n {
		p := fmt.Sprintf("/kcs2/img/ack/%03d.png", i)
		fetch(t, c, "https://"+gameHost+p, crashAsset(p))
	}
	waitFor(t, "150 uploads", func() bool { return api.Uploads() == n })
	time.Sleep(time.Second) // the SPEC's window: removal durable within 1 s of the acknowledgement
	in.kill()

	api.ResetCounters()
	in.restart()
	if got := in.status().Pending.Count; got != 0 {
		t.Errorf("%d entries pending after the restart, want 0", got)
	}
	in.cli(sessionJSON(api.NewSession()), "session", "set")
	in.cliCode("", "retry", "--wait")
	if got := api.Requests(assettest.Handshake) + api.Requests(assettest.Upload); got != 0 {
		t.Errorf("%d upload requests after the restart, want 0: an acknowledged upload was sent again", got)
	}
}
