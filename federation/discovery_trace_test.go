package federation

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestDiscoveryTrace_ReportsEachStep resolves a delegated name whose
// delegate has an SRV record, and a name whose .well-known is broken, and
// checks that the trace saw the well-known response (status, headers,
// body, delegate, TTL), the cached answer on a second lookup, and the SRV
// lookups in the spec's order.
func TestDiscoveryTrace_ReportsEachStep(t *testing.T) {
	pki := newTestPKI(t)
	clock := &discoveryClock{now: time.Unix(1_700_000_000, 0)}
	r := newFakeResolver()
	wk := startTLSTarget(t, pki, "wk", "127.0.0.1:0", wellKnownHandler(`{"m.server":"fed.traced.test"}`, "max-age=3600", nil), "traced.test")
	r.mapHost("traced.test", 443, wk.addr)
	r.mapSRV("matrix-fed", "fed.traced.test", "box.traced.test.", 8449)
	broken := startTLSTarget(t, pki, "broken", "127.0.0.1:0", wellKnownHandler(`{"m.server":`, "", nil), "broken.test")
	r.mapHost("broken.test", 443, broken.addr)
	c := newDiscoveryClient(t, pki, r, clock, true)

	var wellKnown []WellKnownInfo
	var srv []SRVInfo
	trace := &DiscoveryTrace{
		WellKnown: func(i WellKnownInfo) { wellKnown = append(wellKnown, i) },
		SRV:       func(i SRVInfo) { srv = append(srv, i) },
	}
	ctx := WithDiscoveryTrace(context.Background(), trace)

	res, err := c.Resolve(ctx, "traced.test")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Delegated || res.Via != "srv:matrix-fed" || res.TLSServerName != "fed.traced.test" {
		t.Fatalf("resolution = %+v", res)
	}
	if len(wellKnown) != 1 {
		t.Fatalf("well-known traced %d times, want 1", len(wellKnown))
	}
	got := wellKnown[0]
	if got.Cached || got.Status != 200 || got.CacheControl != "max-age=3600" || got.ContentType != "text/plain" ||
		got.Delegate != "fed.traced.test" || got.TTL != time.Hour || got.Err != nil ||
		got.URL != "https://traced.test/.well-known/matrix/server" || !strings.Contains(string(got.Body), "m.server") {
		t.Fatalf("well-known trace = %+v", got)
	}
	if len(srv) != 1 || srv[0].Service != "matrix-fed" || srv[0].Name != "fed.traced.test" || len(srv[0].Records) != 1 {
		t.Fatalf("SRV trace = %+v", srv)
	}

	// The second lookup is answered from the cache, and says so.
	wellKnown, srv = nil, nil
	if _, err := c.Resolve(ctx, "traced.test"); err != nil {
		t.Fatal(err)
	}
	if len(wellKnown) != 1 || !wellKnown[0].Cached || wellKnown[0].Delegate != "fed.traced.test" {
		t.Fatalf("cached well-known trace = %+v", wellKnown)
	}

	// A broken document is reported with its body and the parse error,
	// then both SRV services are tried on the name itself.
	wellKnown, srv = nil, nil
	res, err = c.Resolve(ctx, "broken.test")
	if err != nil {
		t.Fatal(err)
	}
	if res.Delegated || res.Via != "default-port" {
		t.Fatalf("broken resolution = %+v", res)
	}
	if len(wellKnown) != 1 || wellKnown[0].Status != 200 || wellKnown[0].Err == nil ||
		!strings.Contains(wellKnown[0].Err.Error(), "not a JSON object") || string(wellKnown[0].Body) != `{"m.server":` {
		t.Fatalf("broken well-known trace = %+v", wellKnown)
	}
	if len(srv) != 2 || srv[0].Service != "matrix-fed" || srv[1].Service != "matrix" || srv[0].Err == nil {
		t.Fatalf("broken SRV trace = %+v", srv)
	}
}
