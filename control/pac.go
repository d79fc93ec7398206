package control

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// pacTemplate is ES5, which every PAC engine runs, and uses none of the PAC helper
// functions: dnsDomainIs is a plain suffix test ("evilkancolle-server.com" would match
// "kancolle-server.com"), so the dot boundary is tested by hand. The two %s are JSON
// literals, which are valid, safely escaped JavaScript.
const pacTemplate = `// fusou-proxy: the game's hosts go through the proxy, everything else goes direct.
function FindProxyForURL(url, host) {
  var domains = %s;
  var h = host.toLowerCase();
  for (var i = 0; i < domains.length; i++) {
    var d = domains[i];
    if (h === d || (h.length > d.length && h.substring(h.length - d.length - 1) === "." + d)) {
      return %s;
    }
  }
  return "DIRECT";
}
`

// buildPAC renders the PAC file for a proxy listening on proxyAddr.
func buildPAC(proxyAddr string, mitmHosts []string) ([]byte, error) {
	host, port, err := net.SplitHostPort(proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("parse proxy address %q: %w", proxyAddr, err)
	}
	// A proxy on every interface is reached here through loopback: see the package comment.
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	domains := make([]string, 0, len(mitmHosts))
	for _, d := range mitmHosts {
		if d = strings.Trim(strings.ToLower(d), "."); d != "" {
			domains = append(domains, d)
		}
	}
	domainsJS, err := json.Marshal(domains)
	if err != nil {
		return nil, fmt.Errorf("encode mitm hosts: %w", err)
	}
	proxyJS, err := json.Marshal("PROXY " + net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("encode proxy address: %w", err)
	}
	return fmt.Appendf(nil, pacTemplate, domainsJS, proxyJS), nil
}
