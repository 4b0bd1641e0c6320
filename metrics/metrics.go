// Package metrics exports what a Ferry server does in the Prometheus text
// format: inbound transactions, PDUs and EDUs, persisted events by
// outcome, state resolution and database transaction durations, key
// fetches, outbound delivery per destination, requests served by the
// federation and host listeners, and the size of what is held. The core packages know nothing of Prometheus: they offer plain
// hooks (functions in their configuration) and readers (Delivery.Health,
// store.Gauges), and this package turns those into collectors.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/store"
)

// namespace prefixes every metric of ours.
const namespace = "ferry"

// scrapeTimeout bounds the reads a scrape makes of the database and the
// delivery state.
const scrapeTimeout = 5 * time.Second

// Metrics holds the collectors of one server. Its methods are the hooks
// the components are given; all are safe for concurrent use.
type Metrics struct {
	registry *prometheus.Registry

	inboundTxns *prometheus.CounterVec
	inboundPDUs *prometheus.CounterVec
	inboundEDUs *prometheus.CounterVec
	persisted   *prometheus.CounterVec
	stateRes    prometheus.Histogram
	dbTxns      *prometheus.HistogramVec
	keyFetches  *prometheus.CounterVec

	outboundAttempts *prometheus.CounterVec
	outboundRefused  prometheus.Counter

	federationRequests *requestMetrics
	hostRequests       *requestMetrics
}

// New returns the metrics of a server, registered with Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		inboundTxns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "inbound_transactions_total",
			Help: "Transactions received on /send, by result: processed, or deduplicated (answered from the stored response).",
		}, []string{"result"}),
		inboundPDUs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "inbound_pdus_total",
			Help: "PDUs received in transactions, by the answer given: accepted (no error, soft-failed included) or refused (a per-PDU error).",
		}, []string{"result"}),
		inboundEDUs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "inbound_edus_total",
			Help: "EDUs received in transactions, by type and result (accepted or ignored).",
		}, []string{"type", "result"}),
		persisted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_persisted_total",
			Help: "Events stored, by outcome (accepted, soft_failed, rejected, outlier) and origin (local: sent by one of our users; remote).",
		}, []string{"outcome", "origin"}),
		stateRes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "state_resolution_seconds",
			Help:    "Time taken by each state resolution.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		dbTxns: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "database_transaction_seconds",
			Help:    "Time taken by each database transaction, by kind (read or write; writes include the commit's fsync).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"kind"}),
		keyFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "key_fetches_total",
			Help: "Fetches of other servers' signing keys, by source (direct or notary) and result (ok or error).",
		}, []string{"source", "result"}),
	}
	m.outboundAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "outbound_transaction_attempts_total",
		Help: "Attempts to send a transaction to any destination, by result: ok (answered) or failed (to be retried after a backoff).",
	}, []string{"result"})
	m.outboundRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "outbound_refused_pdus_total",
		Help: "PDUs other servers refused in their answers to our transactions (logged, not retried).",
	})
	m.registry.MustRegister(m.outboundAttempts, m.outboundRefused)
	m.federationRequests = newRequestMetrics("federation", "the federation listener")
	m.hostRequests = newRequestMetrics("host", "the host API listener")
	m.federationRequests.register(m.registry)
	m.hostRequests.register(m.registry)
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.inboundTxns, m.inboundPDUs, m.inboundEDUs, m.persisted, m.stateRes, m.dbTxns, m.keyFetches,
	)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Registry is where the metrics are registered, for programs that add
// their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// InboundTransaction counts a /send transaction; deduplicated when it was
// answered from the stored response of an earlier delivery.
func (m *Metrics) InboundTransaction(deduplicated bool) {
	result := "processed"
	if deduplicated {
		result = "deduplicated"
	}
	m.inboundTxns.WithLabelValues(result).Inc()
}

// InboundPDUs counts the verdicts of one transaction's PDUs.
func (m *Metrics) InboundPDUs(verdicts map[string]error) {
	var accepted, refused int
	for _, err := range verdicts {
		if err == nil {
			accepted++
		} else {
			refused++
		}
	}
	m.inboundPDUs.WithLabelValues("accepted").Add(float64(accepted))
	m.inboundPDUs.WithLabelValues("refused").Add(float64(refused))
}

// InboundEDU counts an EDU by type; err is what handling it returned.
func (m *Metrics) InboundEDU(eduType string, err error) {
	result := "accepted"
	if err != nil {
		result = "ignored"
	}
	m.inboundEDUs.WithLabelValues(eduTypeLabel(eduType), result).Inc()
}

// knownEDUTypes bounds the type label: EDU types are chosen by remote
// servers, so an unknown one must not create a new series.
var knownEDUTypes = map[string]bool{
	"m.typing": true, "m.receipt": true, "m.presence": true, "m.device_list_update": true,
	"m.signing_key_update": true, "m.direct_to_device": true,
}

func eduTypeLabel(t string) string {
	if knownEDUTypes[t] {
		return t
	}
	return "other"
}

// Persisted is homeserver.Engine's ObservePersisted hook.
func (m *Metrics) Persisted(outcome store.Outcome, local bool) {
	origin := "remote"
	if local {
		origin = "local"
	}
	m.persisted.WithLabelValues(outcome.String(), origin).Inc()
}

// OutboundAttempt is homeserver.Delivery's ObserveAttempt hook.
func (m *Metrics) OutboundAttempt(delivered bool, refusedPDUs int) {
	result := "failed"
	if delivered {
		result = "ok"
	}
	m.outboundAttempts.WithLabelValues(result).Inc()
	m.outboundRefused.Add(float64(refusedPDUs))
}

// StateResolved is homeserver.Engine's ObserveStateResolution hook.
func (m *Metrics) StateResolved(d time.Duration) { m.stateRes.Observe(d.Seconds()) }

// DatabaseTransaction is store.Options' ObserveTransaction hook.
func (m *Metrics) DatabaseTransaction(write bool, d time.Duration) {
	kind := "read"
	if write {
		kind = "write"
	}
	m.dbTxns.WithLabelValues(kind).Observe(d.Seconds())
}

// CountingFetcher returns f counting each key fetch it makes.
func (m *Metrics) CountingFetcher(f keys.Fetcher) keys.Fetcher {
	return countingFetcher{f: f, m: m}
}

type countingFetcher struct {
	f keys.Fetcher
	m *Metrics
}

func (c countingFetcher) FetchServerKeys(ctx context.Context, serverName string) ([]byte, error) {
	body, err := c.f.FetchServerKeys(ctx, serverName)
	c.m.keyFetches.WithLabelValues("direct", resultOf(err)).Inc()
	return body, err
}

func (c countingFetcher) QueryServerKeys(ctx context.Context, notary string, query []keys.KeyQuery) ([][]byte, error) {
	docs, err := c.f.QueryServerKeys(ctx, notary, query)
	c.m.keyFetches.WithLabelValues("notary", resultOf(err)).Inc()
	return docs, err
}

func resultOf(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// Sources are what a scrape reads: the delivery state of every
// destination and the database's counts.
type Sources struct {
	Delivery interface {
		Health(ctx context.Context) ([]homeserver.DestinationHealth, error)
	}
	Store interface {
		Gauges(ctx context.Context) (store.Gauges, error)
	}
	// Now is the clock backoffs are measured against; time.Now when nil.
	Now func() time.Time
}

// WatchSources registers a collector that reads src at each scrape.
func (m *Metrics) WatchSources(src Sources) {
	if src.Now == nil {
		src.Now = time.Now
	}
	m.registry.MustRegister(&scrapeCollector{src: src})
}

// Descriptions of what scrapeCollector reports.
var (
	descRooms         = prometheus.NewDesc(namespace+"_rooms", "Rooms this server holds a current state of.", nil, nil)
	descJoinedServers = prometheus.NewDesc(namespace+"_joined_servers",
		"Distinct servers (ours included) with a joined member in the rooms held.", nil, nil)
	descHostLog = prometheus.NewDesc(namespace+"_host_log_position",
		"Position of the newest item of the host event stream.", nil, nil)
	descOutboundQueued = prometheus.NewDesc(namespace+"_outbound_queued",
		"PDUs and EDUs waiting to be sent (in flight included), by destination.", []string{"destination"}, nil)
	descDestinations = prometheus.NewDesc(namespace+"_outbound_destinations",
		"Destinations by delivery state: ok (last attempt succeeded or none yet), failing (retrying now), backing_off (waiting before the next attempt).", []string{"state"}, nil)
	descBackoff = prometheus.NewDesc(namespace+"_outbound_backoff_seconds",
		"Seconds until the next attempt to a destination that is backing off.", []string{"destination"}, nil)
	descFailures = prometheus.NewDesc(namespace+"_outbound_consecutive_failures",
		"Consecutive failed attempts to reach a destination.", []string{"destination"}, nil)
	descTxnsSent = prometheus.NewDesc(namespace+"_outbound_transactions_total",
		"Transactions a destination answered, since the server started.", []string{"destination"}, nil)
	descPDUErrors = prometheus.NewDesc(namespace+"_outbound_pdu_errors_total",
		"PDUs a destination refused in its answers, since the server started.", []string{"destination"}, nil)
	descDropped = prometheus.NewDesc(namespace+"_outbound_dropped_total",
		"Queued events a catch-up dropped for a destination (it fetches them with /get_missing_events), since the server started.", []string{"destination"}, nil)
	descSenders = prometheus.NewDesc(namespace+"_outbound_senders",
		"Destinations with a sender running (those with pending work).", nil, nil)
	descCatchUps = prometheus.NewDesc(namespace+"_outbound_catch_ups_total",
		"Catch-ups (the backlog replaced by the newest events per room) of a destination, since the server started.", []string{"destination"}, nil)
	descScrapeErrors = prometheus.NewDesc(namespace+"_scrape_errors",
		"Sources this scrape could not read (1 per failed source).", []string{"source"}, nil)
)

// scrapeCollector reads the delivery state and the database's counts at
// each scrape: they change with every event, so counting them as they
// change would cost more than asking.
type scrapeCollector struct{ src Sources }

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRooms, descJoinedServers, descHostLog, descOutboundQueued, descDestinations,
		descBackoff, descFailures, descTxnsSent, descPDUErrors, descCatchUps, descDropped, descSenders, descScrapeErrors} {
		ch <- d
	}
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if c.src.Store != nil {
		g, err := c.src.Store.Gauges(ctx)
		if err != nil {
			ch <- prometheus.MustNewConstMetric(descScrapeErrors, prometheus.GaugeValue, 1, "store")
		} else {
			ch <- prometheus.MustNewConstMetric(descRooms, prometheus.GaugeValue, float64(g.Rooms))
			ch <- prometheus.MustNewConstMetric(descJoinedServers, prometheus.GaugeValue, float64(g.JoinedServers))
			ch <- prometheus.MustNewConstMetric(descHostLog, prometheus.GaugeValue, float64(g.HostLogHead))
		}
	}
	if c.src.Delivery == nil {
		return
	}
	health, err := c.src.Delivery.Health(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descScrapeErrors, prometheus.GaugeValue, 1, "delivery")
		return
	}
	now := c.src.Now()
	states := map[string]int{"ok": 0, "failing": 0, "backing_off": 0}
	senders := 0
	for _, h := range health {
		d := h.Name
		ch <- prometheus.MustNewConstMetric(descOutboundQueued, prometheus.GaugeValue, float64(h.Queued), d)
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.GaugeValue, float64(h.Failures), d)
		ch <- prometheus.MustNewConstMetric(descTxnsSent, prometheus.CounterValue, float64(h.TxnsSent), d)
		ch <- prometheus.MustNewConstMetric(descPDUErrors, prometheus.CounterValue, float64(h.PDUErrors), d)
		ch <- prometheus.MustNewConstMetric(descCatchUps, prometheus.CounterValue, float64(h.CatchUps), d)
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(h.Dropped), d)
		if h.Active {
			senders++
		}
		switch {
		case h.BackoffUntil.After(now):
			states["backing_off"]++
			ch <- prometheus.MustNewConstMetric(descBackoff, prometheus.GaugeValue, h.BackoffUntil.Sub(now).Seconds(), d)
		case h.Failures > 0:
			states["failing"]++
		default:
			states["ok"]++
		}
	}
	ch <- prometheus.MustNewConstMetric(descSenders, prometheus.GaugeValue, float64(senders))
	for state, n := range states {
		ch <- prometheus.MustNewConstMetric(descDestinations, prometheus.GaugeValue, float64(n), state)
	}
}
