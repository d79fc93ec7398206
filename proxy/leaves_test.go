package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/fusou-proxy/fusou-proxy/certs"
)

// TestConcurrentClientsGenerateOneLeafPerHost sends 200 clients, each on its own connection,
// at 50 game hosts at the same moment, through a proxy whose CertSource is the real
// certs.Authority: every host's leaf must be generated exactly once (SPEC §10).
func TestConcurrentClientsGenerateOneLeafPerHost(t *testing.T) {
	const clients, hosts = 200, 50
	upCA := newTestCA(t, "game CA")
	game, _ := startTLSServer(t, upCA.leaf(t, "*.kancolle-server.com"), http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Host) }))
	ca, err := certs.Open(certs.Options{Dir: t.TempDir(), Hosts: []string{"kancolle-server.com"}})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, upCA.pool, []DialRule{ruleTo(t, "", "443", game)}, func(o *Options) {
		o.Certs = ca
		o.Sink = nil
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	proxyURL, _ := url.Parse(h.front.URL)

	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			// Neighbours share a host, so that its clients ask for the leaf together.
			host := fmt.Sprintf("w%02d.kancolle-server.com", i/(clients/hosts))
			tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: roots}}
			defer tr.CloseIdleConnections()
			<-start
			resp, err := (&http.Client{Transport: tr}).Get("https://" + host + "/kcs2/index.php")
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || string(b) != host {
				t.Errorf("client %d: status %d, body %q, want 200 %q", i, resp.StatusCode, b, host)
			}
		})
	}
	close(start)
	wg.Wait()
	st := ca.Stats()
	t.Logf("leaf stats: %+v (misses above %d were concurrent)", st, hosts)
	if st.Generations != hosts || st.Cached != hosts {
		t.Errorf("leaf stats after %d clients over %d hosts = %+v, want %d generations", clients, hosts, st, hosts)
	}
	if got := h.proxy.Stats().MITM; got != clients {
		t.Errorf("%d MITM'd connections, want %d (one per client)", got, clients)
	}
}
