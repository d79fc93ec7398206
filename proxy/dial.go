package proxy

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/fusou-proxy/fusou-proxy/internal/dialrule"
)

// DialRule redirects a dial, as curl's --connect-to does (package dialrule).
type DialRule = dialrule.Rule

// ParseDialRule parses a rule in curl's --connect-to syntax, "HOST:PORT:ADDR:PORT2".
func ParseDialRule(s string) (DialRule, error) { return dialrule.Parse(s) }

// MatchHost reports whether host (with or without a port) is one of domains or a subdomain
// of one, ignoring case and a trailing dot. An IP address matches only if listed as is.
func MatchHost(host string, domains []string) bool {
	h := normalizeHost(host)
	if h == "" {
		return false
	}
	for _, d := range domains {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimPrefix(d, ".")), ".")
		if d == "" {
			continue
		}
		if h == d || (len(h) > len(d) && strings.HasSuffix(h, d) && h[len(h)-len(d)-1] == '.') {
			return true
		}
	}
	return false
}

// normalizeHost strips the port and IPv6 brackets, lower-cases, and drops a trailing dot.
func normalizeHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// netDialer is shared by tunnels and upstream requests; its timeouts match
// http.DefaultTransport's.
var netDialer = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}

// dialContext dials addr after applying the dial rules. The Transport calls it from its own
// goroutines, where a panic would end the process, hence the recover.
func (p *Proxy) dialContext(ctx context.Context, network, addr string) (c net.Conn, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = p.recovered("dial", addr, v)
		}
	}()
	to := dialrule.Rewrite(p.dialRules, addr)
	if to != addr {
		p.log.Debug("dial rule applied", zap.String("addr", addr), zap.String("to", to))
	}
	c, err = netDialer.DialContext(ctx, network, to)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}
