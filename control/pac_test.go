package control

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runPAC evaluates pac with node and returns FindProxyForURL(url, host) for each host.
func runPAC(t *testing.T, pac []byte, hosts []string) []string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	file := filepath.Join(t.TempDir(), "proxy.pac")
	if err := os.WriteFile(file, pac, 0o600); err != nil {
		t.Fatal(err)
	}
	hostsJSON, err := json.Marshal(hosts)
	if err != nil {
		t.Fatal(err)
	}
	// The PAC runs in a fresh function scope where none of the PAC helpers (dnsDomainIs,
	// isInNet, ...) exist, so using one would fail here.
	const script = `
const pac = require("fs").readFileSync(process.argv[1], "utf8");
const find = new Function(pac + "\nreturn FindProxyForURL;")();
const hosts = JSON.parse(process.argv[2]);
console.log(JSON.stringify(hosts.map(h => find("https://" + h + "/kcs2/a.png", h))));
`
	out, err := exec.Command(node, "-e", script, file, string(hostsJSON)).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s\nPAC:\n%s", err, out, pac)
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node output %q: %v", out, err)
	}
	return got
}

func TestPACRouting(t *testing.T) {
	pac, err := buildPAC("127.0.0.1:8050", []string{"kancolle-server.com", "Example.ORG."})
	if err != nil {
		t.Fatal(err)
	}
	const proxy, direct = "PROXY 127.0.0.1:8050", "DIRECT"
	cases := map[string]string{
		"kancolle-server.com":            proxy,
		"w01y.kancolle-server.com":       proxy,
		"a.b.kancolle-server.com":        proxy,
		"W01Y.KANCOLLE-SERVER.COM":       proxy,
		"example.org":                    proxy,
		"www.example.org":                proxy,
		"evilkancolle-server.com":        direct,
		"kancolle-server.com.evil.test":  direct,
		"kancolle-server.co":             direct,
		"ancolle-server.com":             direct,
		"google.com":                     direct,
		"127.0.0.1":                      direct,
		"xkancolle-server.com":           direct,
		"kancolle-server.com-evil.test":  direct,
		"notexample.org":                 direct,
		"kancolle-server.comexample.org": direct,
	}
	var hosts []string
	for h := range cases {
		hosts = append(hosts, h)
	}
	got := runPAC(t, pac, hosts)
	for i, h := range hosts {
		if got[i] != cases[h] {
			t.Errorf("FindProxyForURL(%q) = %q, want %q", h, got[i], cases[h])
		}
	}
}

func TestPACProxyAddress(t *testing.T) {
	cases := map[string]string{
		"127.0.0.1:8050":  `"PROXY 127.0.0.1:8050"`,
		"0.0.0.0:8050":    `"PROXY 127.0.0.1:8050"`,
		"[::]:8050":       `"PROXY 127.0.0.1:8050"`,
		":8050":           `"PROXY 127.0.0.1:8050"`,
		"[::1]:9000":      `"PROXY [::1]:9000"`,
		"localhost:18050": `"PROXY localhost:18050"`,
	}
	for addr, want := range cases {
		pac, err := buildPAC(addr, []string{"kancolle-server.com"})
		if err != nil {
			t.Fatalf("buildPAC(%q): %v", addr, err)
		}
		if !strings.Contains(string(pac), "return "+want+";") || !strings.Contains(string(pac), `return "DIRECT";`) {
			t.Errorf("buildPAC(%q) lacks %s:\n%s", addr, want, pac)
		}
		if !strings.Contains(string(pac), `var domains = ["kancolle-server.com"];`) {
			t.Errorf("buildPAC(%q) lacks the domain list:\n%s", addr, pac)
		}
	}
}

// Host names are data, never code: a hostile entry cannot break out of its string literal.
func TestPACEscapesHosts(t *testing.T) {
	hostile := []string{`x"];FindProxyForURL=null;alert(1);//`, `</script><script>alert(1)</script>`, "a\u2028b", `back\slash`}
	pac, err := buildPAC("127.0.0.1:8050", append(hostile, "kancolle-server.com"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`x"]`, "</script>", "\u2028"} {
		if strings.Contains(string(pac), bad) {
			t.Errorf("PAC holds %q unescaped:\n%s", bad, pac)
		}
	}
	// node would fail on alert (undefined) if any entry had become code.
	got := runPAC(t, pac, []string{"kancolle-server.com", strings.ToLower(hostile[0]), "google.com"})
	want := []string{"PROXY 127.0.0.1:8050", "PROXY 127.0.0.1:8050", "DIRECT"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("result %d = %q, want %q", i, got[i], want[i])
		}
	}
}
