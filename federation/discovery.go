package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bounds of /.well-known/matrix/server handling (server-server API,
// "Resolving server names", step 3).
const (
	// wellKnownDefaultTTL applies when the response has no usable
	// Cache-Control max-age; the spec recommends 24 hours.
	wellKnownDefaultTTL = 24 * time.Hour
	// wellKnownMaxTTL caps any max-age; the spec recommends 48 hours.
	wellKnownMaxTTL = 48 * time.Hour
	// wellKnownMinTTL is our floor for no-store, no-cache or tiny max-age,
	// so a remote server cannot make us fetch on every request.
	wellKnownMinTTL = time.Minute
	// Failures are cached for wellKnownFailureBase, doubling with each
	// consecutive failure up to the spec's recommended hour.
	wellKnownFailureBase = time.Minute
	wellKnownFailureMax  = time.Hour
	wellKnownMaxBody     = 64 << 10
	wellKnownMaxHops     = 10
	wellKnownTimeout     = 15 * time.Second
)

// SRV services, in the order the spec asks for them: _matrix-fed first,
// then the deprecated _matrix.
var srvServices = []string{"matrix-fed", "matrix"}

// delegation is where requests for a server name go after the
// .well-known step: the name to connect to (the server name itself, or the
// m.server it delegates to), which fixes the Host header and the name the
// TLS certificate must be valid for.
type delegation struct {
	serverName string     // the destination's server name (for signing)
	target     serverName // what to resolve: the server name or its delegate
	delegated  bool       // target came from /.well-known/matrix/server
}

// hostHeader is the Host header for requests: the (delegated) server name
// exactly, with its port if it had one.
func (d delegation) hostHeader() string { return d.target.raw }

// tlsServerName is the name the certificate must be valid for: the
// (delegated) hostname or IP address, without port or brackets. For IP
// addresses crypto/tls sends no SNI, as the spec asks.
func (d delegation) tlsServerName() string { return d.target.host }

// dialTarget is one host:port to resolve with A/AAAA and connect to.
type dialTarget struct {
	host string
	port uint16
}

// resolution is the complete answer of server discovery.
type resolution struct {
	delegation
	targets []dialTarget // in the order to try them
	// via says which step produced the targets: "ip", "port", "srv:<service>"
	// or "default-port".
	via string
}

// wellKnownEntry is the cached outcome of one .well-known fetch.
type wellKnownEntry struct {
	delegate serverName // valid when err == nil
	err      error
	expires  time.Time
	failures int // consecutive failures, for back-off
}

// discovery resolves server names to connection targets, caching
// .well-known answers. It is safe for concurrent use.
type discovery struct {
	resolver Resolver
	client   *http.Client // fetches .well-known through the guarded dialer
	now      func() time.Time

	mu        sync.Mutex
	wellKnown map[string]*wellKnownEntry // by hostname
	inflight  map[string]*wellKnownCall  // fetches under way, by hostname
}

// wellKnownCall is one .well-known fetch that concurrent lookups of the
// same host wait for instead of fetching again.
type wellKnownCall struct {
	done     chan struct{}
	waiters  int
	delegate serverName
	ok       bool
	err      error // why the fetch failed, for traces
}

func newDiscovery(resolver Resolver, client *http.Client, now func() time.Time) *discovery {
	return &discovery{resolver: resolver, client: client, now: now,
		wellKnown: map[string]*wellKnownEntry{}, inflight: map[string]*wellKnownCall{}}
}

// delegate runs steps 1 to 3 of the resolution: IP literals and names
// with explicit ports are used as they are; other names are looked up at
// /.well-known/matrix/server (cached). A failed .well-known is not an
// error: the server name itself is the target then (steps 4 to 6).
func (d *discovery) delegate(ctx context.Context, name string) (delegation, error) {
	sn, err := parseServerName(name)
	if err != nil {
		return delegation{}, err
	}
	out := delegation{serverName: name, target: sn}
	if sn.isIP() || sn.hasPort {
		return out, nil
	}
	if delegate, ok := d.lookupWellKnown(ctx, sn.host); ok {
		out.target, out.delegated = delegate, true
	}
	return out, nil
}

// resolve runs the whole resolution: the delegation, then SRV
// (_matrix-fed._tcp, then _matrix._tcp) for hostnames without a port,
// then port 8448.
func (d *discovery) resolve(ctx context.Context, name string) (resolution, error) {
	del, err := d.delegate(ctx, name)
	if err != nil {
		return resolution{}, err
	}
	t := del.target
	switch {
	case t.isIP():
		port := uint16(defaultFederationPort)
		if t.hasPort {
			port = t.port
		}
		return resolution{delegation: del, targets: []dialTarget{{t.host, port}}, via: "ip"}, nil
	case t.hasPort:
		return resolution{delegation: del, targets: []dialTarget{{t.host, t.port}}, via: "port"}, nil
	}
	for _, service := range srvServices {
		srvs, err := d.resolver.LookupSRV(ctx, service, t.host)
		traceSRV(ctx, service, t.host, srvs, err)
		if err != nil {
			continue
		}
		var targets []dialTarget
		for _, srv := range srvs {
			host := strings.TrimSuffix(srv.Target, ".")
			if host == "" || srv.Port == 0 {
				continue // "." means the service is not offered here
			}
			targets = append(targets, dialTarget{host, srv.Port})
		}
		if len(targets) > 0 {
			return resolution{delegation: del, targets: targets, via: "srv:" + service}, nil
		}
	}
	return resolution{delegation: del, targets: []dialTarget{{t.host, defaultFederationPort}}, via: "default-port"}, nil
}

// lookupWellKnown returns the cached or freshly fetched delegate of host.
// Concurrent lookups of one host share a single fetch.
func (d *discovery) lookupWellKnown(ctx context.Context, host string) (serverName, bool) {
	now := d.now()
	d.mu.Lock()
	e := d.wellKnown[host]
	if e != nil && now.Before(e.expires) {
		d.mu.Unlock()
		traceWellKnownReused(ctx, host, e.delegate, e.err)
		return e.delegate, e.err == nil
	}
	if c := d.inflight[host]; c != nil {
		c.waiters++
		d.mu.Unlock()
		select {
		case <-c.done:
			traceWellKnownReused(ctx, host, c.delegate, c.err)
			return c.delegate, c.ok
		case <-ctx.Done():
			return serverName{}, false
		}
	}
	c := &wellKnownCall{done: make(chan struct{})}
	d.inflight[host] = c
	failures := 0
	if e != nil && e.err != nil {
		failures = e.failures
	}
	d.mu.Unlock()

	delegate, ttl, err := d.fetchWellKnown(ctx, host)
	c.delegate, c.ok, c.err = delegate, err == nil, err
	d.mu.Lock()
	delete(d.inflight, host)
	// When our caller gave up, that says nothing about the remote
	// server: nothing is cached.
	if err == nil || ctx.Err() == nil {
		entry := &wellKnownEntry{delegate: delegate, err: err}
		if err != nil {
			entry.failures = failures + 1
			entry.expires = now.Add(failureBackoff(entry.failures))
		} else {
			entry.expires = now.Add(ttl)
		}
		d.wellKnown[host] = entry
	}
	d.mu.Unlock()
	close(c.done)
	return delegate, err == nil
}

func failureBackoff(failures int) time.Duration {
	d := wellKnownFailureBase
	for i := 1; i < failures && d < wellKnownFailureMax; i++ {
		d *= 2
	}
	return min(d, wellKnownFailureMax)
}

// fetchWellKnown GETs https://host/.well-known/matrix/server, following
// redirects (loops refused), and returns the parsed m.server and how long
// to cache it. A DiscoveryTrace in ctx gets what the response held.
func (d *discovery) fetchWellKnown(ctx context.Context, host string) (delegate serverName, ttl time.Duration, err error) {
	var info WellKnownInfo
	if trace := discoveryTraceFrom(ctx); trace != nil && trace.WellKnown != nil {
		info.Host = host
		defer func() {
			info.Delegate, info.TTL, info.Err = delegate.raw, ttl, err
			trace.WellKnown(info)
		}()
	}
	ctx, cancel := context.WithTimeout(ctx, wellKnownTimeout)
	defer cancel()
	u := (&url.URL{Scheme: "https", Host: host, Path: "/.well-known/matrix/server"}).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return serverName{}, 0, fmt.Errorf("well-known %s: %w", host, err)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return serverName{}, 0, fmt.Errorf("well-known %s: %w", host, err)
	}
	defer resp.Body.Close()
	info.URL, info.Status = resp.Request.URL.String(), resp.StatusCode
	info.CacheControl, info.ContentType = resp.Header.Get("Cache-Control"), resp.Header.Get("Content-Type")
	if resp.StatusCode != http.StatusOK {
		return serverName{}, 0, fmt.Errorf("well-known %s: status %d", host, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBody+1))
	info.Body = body
	if err != nil {
		return serverName{}, 0, fmt.Errorf("well-known %s: %w", host, err)
	}
	if len(body) > wellKnownMaxBody {
		return serverName{}, 0, fmt.Errorf("well-known %s: body larger than %d bytes", host, wellKnownMaxBody)
	}
	// The spec says to parse the body as JSON whatever its Content-Type.
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return serverName{}, 0, fmt.Errorf("well-known %s: not a JSON object: %w", host, err)
	}
	value, ok := doc["m.server"].(string)
	if !ok {
		return serverName{}, 0, fmt.Errorf("well-known %s: m.server missing or not a string", host)
	}
	delegate, err = parseServerName(value)
	if err != nil {
		return serverName{}, 0, fmt.Errorf("well-known %s: m.server: %w", host, err)
	}
	return delegate, cacheTTL(resp.Header.Get("Cache-Control")), nil
}

// cacheTTL reads max-age from a Cache-Control header and bounds it: the
// spec's default (24h) when absent, its cap (48h), and our one-minute
// floor for no-store, no-cache and smaller ages.
func cacheTTL(header string) time.Duration {
	ttl := wellKnownDefaultTTL
	for _, directive := range strings.Split(header, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(directive), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return wellKnownMinTTL
		case "max-age":
			secs, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64)
			if err != nil || secs < 0 {
				continue
			}
			if secs > int64(wellKnownMaxTTL/time.Second) {
				ttl = wellKnownMaxTTL
			} else {
				ttl = time.Duration(secs) * time.Second
			}
		}
	}
	return min(max(ttl, wellKnownMinTTL), wellKnownMaxTTL)
}

// errRedirectLoop is matched when .well-known redirects revisit a URL or
// go on too long.
var errRedirectLoop = errors.New("redirect loop")

// checkWellKnownRedirect follows redirects over HTTPS only, refusing loops
// and long chains.
func checkWellKnownRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != "https" {
		return fmt.Errorf("well-known redirect to %s: only https is followed", req.URL.Scheme)
	}
	if len(via) >= wellKnownMaxHops {
		return fmt.Errorf("%w: more than %d redirects", errRedirectLoop, wellKnownMaxHops)
	}
	for _, prev := range via {
		if prev.URL.String() == req.URL.String() {
			return fmt.Errorf("%w: %s visited twice", errRedirectLoop, req.URL)
		}
	}
	return nil
}

// hostPortString formats a dial target for messages.
func (t dialTarget) String() string {
	return net.JoinHostPort(t.host, strconv.Itoa(int(t.port)))
}

// Resolution describes where requests for a server name go, for
// diagnostics (`ferry check`) and logs.
type Resolution struct {
	ServerName    string   // the name asked about
	Delegated     bool     // /.well-known/matrix/server delegated it
	Host          string   // the Host header requests carry
	TLSServerName string   // the name the certificate must be valid for
	Targets       []string // host:port pairs to connect to, in order
	// Via names the step that produced Targets: "ip" (IP literal), "port"
	// (explicit port), "srv:matrix-fed", "srv:matrix" or "default-port".
	Via string
}

// Resolve runs server discovery for serverName as requests would, without
// connecting to the targets (the .well-known fetch, when needed, does
// connect).
func (c *Client) Resolve(ctx context.Context, serverName string) (Resolution, error) {
	res, err := c.discovery.resolve(ctx, serverName)
	if err != nil {
		return Resolution{}, err
	}
	out := Resolution{
		ServerName: serverName, Delegated: res.delegated, Host: res.hostHeader(),
		TLSServerName: res.tlsServerName(), Via: res.via,
	}
	for _, t := range res.targets {
		out.Targets = append(out.Targets, t.String())
	}
	return out, nil
}
