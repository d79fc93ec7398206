package main

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/assets/assettest"
)

// `ca rotate` beside a running proxy: within seconds /ca.pem serves the new CA, and a client
// that trusts only the new CA gets the game through the proxy (SPEC §9).
func TestEndToEndRotateWhileRunning(t *testing.T) {
	game, api := newGameServer(t), assettest.NewServer()
	defer api.Close()
	in := startInstance(t, game, api, "")
	caPEM := func() []byte {
		resp, err := http.Get("http://" + in.controlAddr + "/ca.pem")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	old := caPEM()
	oldClient := in.client()
	fetch(t, oldClient, "https://"+gameHost+"/kcs2/img/title/01.png", game.assets["/kcs2/img/title/01.png"])

	in.cli("", "ca", "rotate")
	waitFor(t, "/ca.pem to serve the rotated CA", func() bool { return !bytes.Equal(caPEM(), old) })
	newClient := in.client() // trusts the CA that `ca export` prints now: the new one
	newClient.Transport.(*http.Transport).DisableKeepAlives = true
	fetch(t, newClient, "https://"+gameHost+"/kcs2/img/title/02.png", game.assets["/kcs2/img/title/02.png"])
}
