// Package dialrule parses and applies dial rules in the syntax of curl's --connect-to: the
// proxy's connect_to setting, which points the game's hosts at a local server in tests and
// benchmarks.
package dialrule

import (
	"cmp"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Rule redirects a dial, as curl's --connect-to does: a dial to Host:Port goes to
// ToHost:ToPort instead. The request itself (Host header, TLS server name and certificate
// check) still names the original host, so a rule can point the game's hostname at a local
// test server without weakening verification.
type Rule struct {
	Host   string // lower-case host to match; empty matches any host
	Port   string // port to match; empty matches any port
	ToHost string // host to dial instead; empty keeps the original host
	ToPort string // port to dial instead; empty keeps the original port
}

// String gives the rule back in its "HOST:PORT:ADDR:PORT2" form.
func (r Rule) String() string {
	return bracket(r.Host) + ":" + r.Port + ":" + bracket(r.ToHost) + ":" + r.ToPort
}

// Parse parses "HOST:PORT:ADDR:PORT2", the syntax of curl's --connect-to
// (https://curl.se/docs/manpage.html#--connect-to). An empty HOST or PORT matches any; an
// empty ADDR or PORT2 keeps the original. IPv6 addresses go in brackets: "h:443:[::1]:9443".
func Parse(s string) (Rule, error) {
	var parts [4]string
	rest := s
	for i := range parts {
		last := i == len(parts)-1
		field, tail, err := cutField(rest, last)
		if err != nil {
			return Rule{}, fmt.Errorf("parse dial rule %q: %w", s, err)
		}
		parts[i], rest = field, tail
	}
	r := Rule{Host: strings.ToLower(parts[0]), Port: parts[1], ToHost: parts[2], ToPort: parts[3]}
	for _, p := range []string{r.Port, r.ToPort} {
		if p == "" {
			continue
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return Rule{}, fmt.Errorf("parse dial rule %q: port %q is not a number from 1 to 65535", s, p)
		}
	}
	if r.ToHost == "" && r.ToPort == "" {
		return Rule{}, fmt.Errorf("parse dial rule %q: ADDR and PORT2 are both empty, the rule changes nothing", s)
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
func (r Rule) matches(host, port string) bool {
	return (r.Host == "" || strings.EqualFold(r.Host, host)) && (r.Port == "" || r.Port == port)
}

// Rewrite applies the first matching rule to addr, as curl uses the first match.
func Rewrite(rules []Rule, addr string) string {
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
