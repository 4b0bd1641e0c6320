package federation

import (
	"context"
	"net"
	"time"
)

// DiscoveryTrace holds hooks that server discovery calls as it goes, in
// the manner of net/http/httptrace: attach one to a context with
// WithDiscoveryTrace, and Client.Resolve (or any request) run with that
// context reports the .well-known and SRV steps it takes. Diagnostics
// (`ferry check`) use it to show every step with what it found. Any hook
// may be nil. Hooks run synchronously on the resolving goroutine and must
// not block for long.
type DiscoveryTrace struct {
	// WellKnown is called once per /.well-known/matrix/server lookup,
	// whether it was fetched or answered from the cache.
	WellKnown func(WellKnownInfo)
	// SRV is called after each SRV lookup (_matrix-fed, then _matrix).
	SRV func(SRVInfo)
}

// WellKnownInfo describes one /.well-known/matrix/server lookup.
type WellKnownInfo struct {
	// Host is the hostname whose .well-known was asked for.
	Host string
	// URL is the URL finally answered, after any redirects; empty when no
	// response arrived.
	URL string
	// Cached reports that the answer came from the cache (or from a
	// concurrent lookup of the same host) without a fetch of our own; the
	// response fields are empty then.
	Cached bool
	// Status is the HTTP status; 0 when no response arrived.
	Status int
	// CacheControl and ContentType are the response headers of those
	// names.
	CacheControl string
	ContentType  string
	// Body is the response body as read, up to the size limit.
	Body []byte
	// Delegate is the m.server value when the lookup succeeded.
	Delegate string
	// TTL is how long a successful answer is cached.
	TTL time.Duration
	// Err says why the lookup failed; nil means Delegate applies.
	Err error
}

// SRVInfo describes one SRV lookup of server discovery.
type SRVInfo struct {
	// Service is "matrix-fed" or the deprecated "matrix"; the record
	// asked for is _<Service>._tcp.<Name>.
	Service string
	Name    string
	Records []*net.SRV
	Err     error
}

type discoveryTraceKey struct{}

// WithDiscoveryTrace returns a context under which server discovery
// reports its steps to trace.
func WithDiscoveryTrace(ctx context.Context, trace *DiscoveryTrace) context.Context {
	return context.WithValue(ctx, discoveryTraceKey{}, trace)
}

// discoveryTraceFrom returns the trace attached to ctx, or nil.
func discoveryTraceFrom(ctx context.Context) *DiscoveryTrace {
	trace, _ := ctx.Value(discoveryTraceKey{}).(*DiscoveryTrace)
	return trace
}

// traceWellKnownReused reports a .well-known answer that was not fetched
// by this lookup: from the cache, or shared with a concurrent one.
func traceWellKnownReused(ctx context.Context, host string, delegate serverName, err error) {
	if trace := discoveryTraceFrom(ctx); trace != nil && trace.WellKnown != nil {
		trace.WellKnown(WellKnownInfo{Host: host, Cached: true, Delegate: delegate.raw, Err: err})
	}
}

// traceSRV reports one SRV lookup.
func traceSRV(ctx context.Context, service, name string, records []*net.SRV, err error) {
	if trace := discoveryTraceFrom(ctx); trace != nil && trace.SRV != nil {
		trace.SRV(SRVInfo{Service: service, Name: name, Records: records, Err: err})
	}
}
