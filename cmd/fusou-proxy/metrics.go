package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fusou-proxy/fusou-proxy/assets"
	"github.com/fusou-proxy/fusou-proxy/retry"
)

// metrics is the Prometheus registry behind GET /metrics. The packages keep plain counters;
// this reads them at scrape time, so the hot paths pay nothing for it.
type metrics struct {
	reg          *prometheus.Registry
	passes       prometheus.Counter
	passDuration prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		passes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fusou_retry_passes_total", Help: "Retry passes run.",
		}),
		passDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fusou_retry_pass_duration_seconds", Help: "Duration of retry passes.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}),
	}
	m.reg.MustRegister(m.passes, m.passDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observePass(s retry.Summary) {
	m.passes.Inc()
	m.passDuration.Observe(s.Duration.Seconds())
}

// register adds the gauges and counters read from the app's parts.
func (m *metrics) register(a *app) {
	counter := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	sync := func(f func(s assets.Stats) int64) func() float64 {
		return func() float64 { return float64(f(a.pipeline.Stats())) }
	}
	counter("fusou_captures_total", "Complete asset captures handed to the pipeline.", sync(func(s assets.Stats) int64 { return s.Captured }))
	counter("fusou_captures_shed_total", "Captures dropped because the store could not keep up or failed.", sync(func(s assets.Stats) int64 { return s.Shed }))
	counter("fusou_captures_known_total", "Captures skipped because the server or the store already had them.", sync(func(s assets.Stats) int64 { return s.Known }))
	counter("fusou_captures_committed_total", "Captures committed to the pending store.", sync(func(s assets.Stats) int64 { return s.Committed }))
	uploads := prometheus.NewDesc("fusou_uploads_total", "Upload attempts by outcome.", []string{"outcome"}, nil)
	m.reg.MustRegister(collectorFunc{uploads, func(ch chan<- prometheus.Metric) {
		s := a.pipeline.Stats()
		for outcome, n := range map[string]int64{"success": s.Uploaded, "transient": s.Failed, "permanent": s.Rejected, "auth": s.Auth} {
			ch <- prometheus.MustNewConstMetric(uploads, prometheus.CounterValue, float64(n), outcome)
		}
	}})
	gauge("fusou_pending_entries", "Entries in the pending store.", func() float64 { return float64(a.store.Stats().Count) })
	gauge("fusou_pending_bytes", "Bytes in the pending store.", func() float64 { return float64(a.store.Stats().Bytes) })
	gauge("fusou_commit_queue_captures", "Finished captures waiting for their commit to the pending store.", func() float64 { return float64(a.pipeline.Stats().Queued) })
	counter("fusou_leaf_cache_hits_total", "TLS leaf certificates served from the cache.", func() float64 { return float64(a.ca.Stats().Hits) })
	counter("fusou_leaf_cache_misses_total", "TLS leaf certificates not in the cache.", func() float64 { return float64(a.ca.Stats().Misses) })
	counter("fusou_leaf_generations_total", "TLS leaf certificates generated.", func() float64 { return float64(a.ca.Stats().Generations) })
	counter("fusou_proxy_requests_total", "Requests proxied upstream.", func() float64 { return float64(a.proxy.Stats().Requests) })
	counter("fusou_proxy_mitm_total", "CONNECTs decrypted.", func() float64 { return float64(a.proxy.Stats().MITM) })
	counter("fusou_proxy_tunnels_total", "CONNECTs tunneled untouched.", func() float64 { return float64(a.proxy.Stats().Tunnels) })
	counter("fusou_proxy_upstream_tls_failures_total", "Upstream certificates that failed verification.", func() float64 { return float64(a.proxy.Stats().UpstreamTLSFailures) })
	counter("fusou_proxy_panics_recovered_total", "Panics recovered in proxy handlers.", func() float64 { return float64(a.proxy.Stats().PanicsRecovered) })
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// collectorFunc is a prometheus.Collector of one labelled family computed at scrape time.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
