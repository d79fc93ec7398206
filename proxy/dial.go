package proxy

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// DialRule redirects a dial, as curl's --connect-to does: a dial to Host:Port goes to
// ToHost:ToPort instead. The request itself (Host header, TLS server name and certificate
// check) still names the original host, so a rule can point the game's hostname at a local
// test server without weakening verification.
type DialRule struct {
	Host   string // lower-case host to match; empty matches any host
	Port   string // port to match; empty matches any port
	ToHost string // host to dial instead; empty keeps the original host
	ToPort string // port to dial instead; empty keeps the original port
}

// String gives the rule back in its "HOST:PORT:ADDR:PORT2" form.
func (r DialRule) String() string {
	return bracket(r.Host) + ":" + r.Port + ":" + bracket(r.ToHost) + ":" + r.ToPort
}

// ParseDialRule parses "HOST:PORT:ADDR:PORT2", the syntax of curl's --connect-to
// (https://curl.se/docs/manpage.html#--connect-to). An empty HOST or PORT matches any; an
// empty ADDR or PORT2 keeps the original. IPv6 addresses go in brackets: "h:443:[::1]:9443".
func ParseDialRule(s string) (DialRule, error) {
	var parts [4]string
	rest := s
	for i := range parts {
		last := i == len(parts)-1
		field, tail, err := cutField(rest, last)
		if err != nil {
			return DialRule{}, fmt.Errorf("parse dial rule %q: %w", s, err)
		}
		parts[i], rest = field, tail
	}
	r := DialRule{Host: strings.ToLower(parts[0]), Port: parts[1], ToHost: parts[2], ToPort: parts[3]}
	for _, p := range []string{r.Port, r.ToPort} {
		if p == "" {
			continue
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return DialRule{}, fmt.Errorf("parse dial rule %q: port %q is not a number from 1 to 65535", s, p)
		}
	}
	if r.ToHost == "" && r.ToPort == "" {
		return DialRule{}, fmt.Errorf("parse dial rule %q: ADDR and PORT2 are both empty, the rule changes nothing", s)
	}
	return r, nil
}

// cutField takes one field off s: a bracketed IPv6 address or text up to the next colon.
// The last field takes the rest of s.
func cutField(s string, last bool) (field, rest string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", fmt.Errorf("unclosed '[' in %q", s)
		}
		field, rest = s[1:end], s[end+1:]
		if last {
			if rest != "" {
				return "", "", fmt.Errorf("unexpected %q after ']'", rest)
			}
			return field, "", nil
		}
		if !strings.HasPrefix(rest, ":") {
			return "", "", fmt.Errorf("want ':' after ']' in %q", s)
		}
		return field, rest[1:], nil
	}
	if last {
		if strings.Contains(s, ":") {
			return "", "", fmt.Errorf("too many fields, want HOST:PORT:ADDR:PORT2")
		}
		return s, "", nil
	}
	field, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", fmt.Errorf("too few fields, want HOST:PORT:ADDR:PORT2")
	}
	return field, rest, nil
}

func bracket(host string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

// matches reports whether the rule applies to a dial to host:port.
func (r DialRule) matches(host, port string) bool {
	return (r.Host == "" || strings.EqualFold(r.Host, host)) && (r.Port == "" || r.Port == port)
}

// rewriteAddr applies the first matching rule to addr, as curl uses the first match.
func rewriteAddr(rules []DialRule, addr string) string {
	if len(rules) == 0 {
		return addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	for _, r := range rules {
		if r.matches(host, port) {
			return net.JoinHostPort(cmp.Or(r.ToHost, host), cmp.Or(r.ToPort, port))
		}
	}
	return addr
}

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
	to := rewriteAddr(p.dialRules, addr)
	if to != addr {
		p.log.Debug("dial rule applied", zap.String("addr", addr), zap.String("to", to))
	}
	c, err = netDialer.DialContext(ctx, network, to)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}
