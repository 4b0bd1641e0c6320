package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// requestMetrics count and time the requests of one listener by route
// template (bounded: never the path, which holds IDs), method and status.
type requestMetrics struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newRequestMetrics(listener, description string) *requestMetrics {
	return &requestMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: listener, Name: "requests_total",
			Help: "Requests served by " + description + ", by route template, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: listener, Name: "request_seconds",
			Help:    "Time taken to serve requests on " + description + ", by route template and method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route", "method"}),
	}
}

func (r *requestMetrics) register(reg *prometheus.Registry) {
	reg.MustRegister(r.total, r.duration)
}

func (r *requestMetrics) observe(route, method string, status int, d time.Duration) {
	method = methodLabel(method)
	r.total.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	r.duration.WithLabelValues(route, method).Observe(d.Seconds())
}

// methodLabel bounds the method label: the method is the client's choice.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodPatch:
		return m
	}
	return "other"
}

// FederationRequest is federation.Server's ObserveRequest hook.
func (m *Metrics) FederationRequest(route, method string, status int, d time.Duration) {
	m.federationRequests.observe(route, method, status, d)
}

// HostRequest is hostapi.Config's ObserveRequest hook.
func (m *Metrics) HostRequest(route, method string, status int, d time.Duration) {
	m.hostRequests.observe(route, method, status, d)
}

// Listener serves only /metrics on an address of its own (metrics.listen),
// for a scraper that must not reach the host API.
type Listener struct {
	server   *http.Server
	listener net.Listener
	done     chan struct{}
}

// Listen binds addr (so a bind error is returned here) and serves the
// metrics at /metrics in the background until Close.
func (m *Metrics) Listen(addr string) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	l := &Listener{
		server: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			WriteTimeout:      30 * time.Second,
		},
		listener: ln,
		done:     make(chan struct{}),
	}
	go func() {
		defer close(l.done)
		// Serve returns ErrServerClosed after Close; any other error
		// ends the listener, which a scraper notices at once.
		_ = l.server.Serve(ln)
	}()
	return l, nil
}

// Addr is the address the listener is bound to (its port when addr
// asked for port 0).
func (l *Listener) Addr() net.Addr { return l.listener.Addr() }

// Close stops the listener; ctx bounds the wait for scrapes in flight.
func (l *Listener) Close(ctx context.Context) error {
	err := l.server.Shutdown(ctx)
	<-l.done
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return nil
}
