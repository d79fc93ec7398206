package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/fusou-proxy/fusou-proxy/internal/datadir"
)

// controlClient talks to a running instance's control endpoint.
type controlClient struct {
	base  string // http://127.0.0.1:8051
	token string
	http  *http.Client
}

// errNotRunning says that no instance answers at the control address.
var errNotRunning = errors.New("no fusou-proxy is running")

// client builds a controlClient from the configuration and the data directory's token.
func (g *globals) client() (*controlClient, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(cfg.Control.Listen)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1" // allow_remote: the instance still answers on loopback
	}
	token := cfg.Control.Token
	if token == "" {
		if token, err = datadir.ReadToken(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("%w (no control token in %s: start it with `fusou-proxy run`)", errNotRunning, cfg.DataDir)
		}
	}
	return &controlClient{
		base:  "http://" + net.JoinHostPort(host, port),
		token: token,
		http:  &http.Client{Timeout: 30 * time.Second},
	}, nil
}

// do sends a request and decodes a JSON answer into out (if not nil). A non-2xx status
// becomes an error carrying the endpoint's message.
func (c *controlClient) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w at %s (start it with `fusou-proxy run`)", errNotRunning, strings.TrimPrefix(c.base, "http://"))
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %s (HTTP %d)", method, path, e.Error, resp.StatusCode)
		}
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}
