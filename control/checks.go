package control

import (
	"crypto/sha256"
	"crypto/subtle"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// loopbackHost reports whether a Host header value names this machine in a way no DNS
// answer can change: "localhost" or a loopback IP literal, with an optional port. This is
// the DNS-rebinding defence: a page on evil.example whose name now resolves to 127.0.0.1
// still sends "Host: evil.example".
func loopbackHost(hostport string) bool {
	if rest, ok := strings.CutPrefix(hostport, "["); ok {
		host, port, ok := strings.Cut(rest, "]")
		if !ok || (port != "" && !validPort(strings.TrimPrefix(port, ":"), port[0] == ':')) {
			return false
		}
		addr, err := netip.ParseAddr(host)
		return err == nil && addr.Is6() && addr.Zone() == "" && addr.IsLoopback()
	}
	host, port, hasPort := strings.Cut(hostport, ":")
	if hasPort && !validPort(port, true) {
		return false
	}
	if isLocalhost(host) {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Is4() && addr.IsLoopback()
}

// validPort reports whether p is a decimal port 1-65535 that followed a colon.
func validPort(p string, afterColon bool) bool {
	if !afterColon || p == "" || len(p) > 5 || strings.Trim(p, "0123456789") != "" {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// isLocalhost compares ASCII-only: strings.EqualFold would also accept Unicode look-alikes
// such as "localhoſt" (U+017F folds to 's').
func isLocalhost(h string) bool {
	const want = "localhost"
	if len(h) != len(want) {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != want[i] {
			return false
		}
	}
	return true
}

// checkOrigin returns the request's Origin ("" when absent) and whether it may proceed.
func (s *Server) checkOrigin(r *http.Request) (string, bool) {
	vals, present := r.Header["Origin"]
	if !present {
		return "", true
	}
	if len(vals) != 1 || !s.origins[vals[0]] {
		return "", false
	}
	return vals[0], true
}

// authorized checks "Authorization: Bearer <token>". Comparing SHA-256 digests keeps the
// comparison constant-time whatever the presented token's length.
func (s *Server) authorized(r *http.Request) bool {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return false
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	// RFC 7235: one or more spaces separate the scheme from the credentials.
	token = strings.TrimLeft(token, " ")
	if token == "" {
		return false
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) == 1
}

// isJSON reports whether a Content-Type header value is application/json, parameters
// (such as charset) allowed.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// usableToken reports whether t can be sent as a bearer token in an HTTP header:
// non-empty printable ASCII without spaces.
func usableToken(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] > '~' {
			return false
		}
	}
	return true
}
