package control

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestListenRefusesNonLoopback(t *testing.T) {
	// None of these is ever bound: the address is refused before net.Listen.
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "192.0.2.1:0", "example.com:0", "localhost.:0", "127.0.0.1"} {
		ln, err := Listen(addr, false)
		if err == nil {
			_ = ln.Close()
			t.Errorf("Listen(%q) succeeded", addr)
			continue
		}
		if !strings.Contains(err.Error(), "control.listen") {
			t.Errorf("Listen(%q) error %q does not name control.listen", addr, err)
		}
		if addr != "127.0.0.1" && !errors.Is(err, ErrNotLoopback) {
			t.Errorf("Listen(%q) error %v is not ErrNotLoopback", addr, err)
		}
	}
}

func TestListenLoopback(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := Listen(addr, false)
		if err != nil {
			t.Fatalf("Listen(%q): %v", addr, err)
		}
		if tcp := ln.Addr().(*net.TCPAddr); !tcp.IP.IsLoopback() || tcp.Port == 0 {
			t.Errorf("Listen(%q) bound %v", addr, tcp)
		}
		_ = ln.Close()
	}
	ln, err := Listen("127.0.0.1:0", true)
	if err != nil {
		t.Fatalf("Listen with allowRemote: %v", err)
	}
	_ = ln.Close()
}

// A real listener and http.Client: requests are served over TCP, the Host check sees what
// the client sent, and cancelling the context shuts the server down.
func TestServeRoundTrip(t *testing.T) {
	f := newFixture(t, nil)
	ln, err := Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, ln) }()
	var stopOnce sync.Once
	var stopErr error
	stop := func() error {
		stopOnce.Do(func() { cancel(); stopErr = <-done })
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	client := &http.Client{}

	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Errorf("healthz: %d %q", resp.StatusCode, body)
	}

	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/session", strings.NewReader(goodBody))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("POST /v1/session: %d", resp.StatusCode)
	}
	if sets, _ := f.session.calls(); len(sets) != 1 {
		t.Errorf("%d sets, want 1", len(sets))
	}

	// A rebinding page: the connection reaches us, but the Host names another site.
	req, _ = http.NewRequest(http.MethodGet, "http://"+addr+"/v1/status", nil)
	req.Host = "evil.example:" + strings.Split(addr, ":")[1]
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("rebinding Host: %d, want 403", resp.StatusCode)
	}

	client.CloseIdleConnections()
	if err := stop(); err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	if _, err := client.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("server still answers after shutdown")
	}
}
