package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/keys"
)

// testPKI is a throwaway CA issuing certificates for test names.
type testPKI struct {
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	pool  *x509.CertPool
	pem   []byte
	mu    sync.Mutex
	extra int64
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Ferry test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testPKI{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), extra: 1}
}

// issue returns a certificate valid for names (DNS names or IP addresses).
func (p *testPKI) issue(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.extra++
	serial := p.extra
	p.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// fakeResolver points names at loopback listeners. Names it does not know
// do not resolve, except IP literals, which resolve to themselves.
type fakeResolver struct {
	mu      sync.Mutex
	hosts   map[string][]netip.AddrPort // "host:port"
	srv     map[string][]*net.SRV       // "_service._tcp.name"
	lookups []string
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{hosts: map[string][]netip.AddrPort{}, srv: map[string][]*net.SRV{}}
}

func (f *fakeResolver) mapHost(host string, port uint16, to netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := net.JoinHostPort(host, strconv.Itoa(int(port)))
	f.hosts[k] = append(f.hosts[k], to)
}

func (f *fakeResolver) mapSRV(service, name, target string, port uint16) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := "_" + service + "._tcp." + name
	f.srv[k] = append(f.srv[k], &net.SRV{Target: target, Port: port, Priority: 10, Weight: 5})
}

func (f *fakeResolver) LookupHostPort(_ context.Context, host string, port uint16) ([]netip.AddrPort, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := net.JoinHostPort(host, strconv.Itoa(int(port)))
	f.lookups = append(f.lookups, "A "+k)
	if a, ok := f.hosts[k]; ok {
		return a, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip, port)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (f *fakeResolver) LookupSRV(_ context.Context, service, name string) ([]*net.SRV, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := "_" + service + "._tcp." + name
	f.lookups = append(f.lookups, "SRV "+k)
	if s, ok := f.srv[k]; ok {
		return s, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: k, IsNotFound: true}
}

// tlsTarget is a loopback HTTPS listener that reports what each request
// looked like: {"target", "host", "sni", "path"}.
type tlsTarget struct {
	name     string
	addr     netip.AddrPort
	srv      *httptest.Server
	requests atomic.Int64
	conns    atomic.Int64
}

func startTLSTarget(t testing.TB, pki *testPKI, name string, listenOn string, handler http.Handler, certNames ...string) *tlsTarget {
	t.Helper()
	tt := &tlsTarget{name: name}
	if handler == nil {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{
				"target": tt.name, "host": r.Host, "sni": r.TLS.ServerName, "path": r.URL.RequestURI(),
			})
		})
	}
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tt.requests.Add(1)
		handler.ServeHTTP(w, r)
	})
	srv := httptest.NewUnstartedServer(counted)
	ln, err := net.Listen("tcp", listenOn)
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			tt.conns.Add(1)
		}
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.issue(t, certNames...)}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are what some tests provoke
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tt.srv = srv
	tt.addr = netip.MustParseAddrPort(ln.Addr().String())
	return tt
}

type discoveryClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *discoveryClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *discoveryClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func testKeys(t testing.TB, seed byte) *keys.Own {
	t.Helper()
	s := make([]byte, 32)
	for i := range s {
		s[i] = seed
	}
	k, err := keys.NewPrivateKey("k"+strconv.Itoa(int(seed)), s)
	if err != nil {
		t.Fatal(err)
	}
	return &keys.Own{Current: []keys.PrivateKey{k}}
}

func newDiscoveryClient(t testing.TB, pki *testPKI, res Resolver, clock *discoveryClock, allowPrivate bool) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{
		ServerName: "me.test", Keys: testKeys(t, 1), Resolver: res, RootCAs: pki.pool,
		AllowPrivateAddresses: allowPrivate, Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

type seen struct {
	Target, Host, SNI, Path string
}

func getSeen(t testing.TB, c *Client, dest string) seen {
	t.Helper()
	body, err := c.Do(context.Background(), Request{Method: http.MethodGet, Destination: dest, Path: "/_matrix/federation/v1/version", Unauthenticated: true})
	if err != nil {
		t.Fatalf("request to %s: %v", dest, err)
	}
	var s seen
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// wellKnownHandler serves /.well-known/matrix/server with body and an
// optional Cache-Control header, counting fetches.
func wellKnownHandler(body string, cacheControl string, count *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/matrix/server" {
			http.NotFound(w, r)
			return
		}
		if count != nil {
			count.Add(1)
		}
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		// Deliberately not application/json: the spec says to parse anyway.
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(body))
	})
}

// TestDiscovery_ResolutionOrder walks every step of the spec's resolution
// order with real TLS listeners: each case checks which listener answered,
// the Host header it received and the TLS server name (SNI) the client
// sent, which must match the certificate's name.
func TestDiscovery_ResolutionOrder(t *testing.T) {
	pki := newTestPKI(t)
	clock := &discoveryClock{now: time.Unix(1_700_000_000, 0)}
	type want struct{ target, host, sni, via string }

	run := func(t *testing.T, dest string, r *fakeResolver, w want) {
		t.Helper()
		c := newDiscoveryClient(t, pki, r, clock, true)
		got := getSeen(t, c, dest)
		if got.Target != w.target || got.Host != w.host || got.SNI != w.sni {
			t.Fatalf("request to %s reached %+v, want target %s host %q sni %q", dest, got, w.target, w.host, w.sni)
		}
		res, err := c.Resolve(context.Background(), dest)
		if err != nil {
			t.Fatal(err)
		}
		if res.Via != w.via || res.Host != w.host || res.ServerName != dest || len(res.Targets) == 0 {
			t.Fatalf("Resolve(%s) = %+v, want via %s", dest, res, w.via)
		}
	}

	t.Run("ip literal v4 with port", func(t *testing.T) {
		r := newFakeResolver()
		tgt := startTLSTarget(t, pki, "v4", "127.0.0.1:0", nil, "127.0.0.1")
		dest := tgt.addr.String()
		run(t, dest, r, want{"v4", dest, "", "ip"})
		for _, l := range r.lookups {
			if l[:3] == "SRV" {
				t.Fatalf("IP literal triggered %s", l)
			}
		}
	})
	t.Run("ip literal v4 without port uses 8448", func(t *testing.T) {
		r := newFakeResolver()
		tgt := startTLSTarget(t, pki, "v4-8448", "127.0.0.1:0", nil, "127.0.0.1")
		r.mapHost("127.0.0.1", 8448, tgt.addr)
		run(t, "127.0.0.1", r, want{"v4-8448", "127.0.0.1", "", "ip"})
	})
	t.Run("ip literal v6 with port", func(t *testing.T) {
		r := newFakeResolver()
		tgt := startTLSTarget(t, pki, "v6", "[::1]:0", nil, "::1")
		dest := tgt.addr.String()
		run(t, dest, r, want{"v6", dest, "", "ip"})
	})
	t.Run("ip literal v6 without port uses 8448", func(t *testing.T) {
		r := newFakeResolver()
		tgt := startTLSTarget(t, pki, "v6-8448", "[::1]:0", nil, "::1")
		r.mapHost("::1", 8448, tgt.addr)
		run(t, "[::1]", r, want{"v6-8448", "[::1]", "", "ip"})
	})
	t.Run("hostname with explicit port skips well-known", func(t *testing.T) {
		r := newFakeResolver()
		tgt := startTLSTarget(t, pki, "port", "127.0.0.1:0", nil, "port.test")
		r.mapHost("port.test", 8449, tgt.addr)
		run(t, "port.test:8449", r, want{"port", "port.test:8449", "port.test", "port"})
		for _, l := range r.lookups {
			if l == "A port.test:443" {
				t.Fatal("explicit port fetched .well-known")
			}
		}
	})
	t.Run("well-known delegation with port", func(t *testing.T) {
		r := newFakeResolver()
		wk := startTLSTarget(t, pki, "wk", "127.0.0.1:0", wellKnownHandler(`{"m.server": "deleg.test:9001"}`, "", nil), "wk1.test")
		r.mapHost("wk1.test", 443, wk.addr)
		tgt := startTLSTarget(t, pki, "delegated", "127.0.0.1:0", nil, "deleg.test")
		r.mapHost("deleg.test", 9001, tgt.addr)
		run(t, "wk1.test", r, want{"delegated", "deleg.test:9001", "deleg.test", "port"})
	})
	t.Run("well-known delegation to an IP literal", func(t *testing.T) {
		r := newFakeResolver()
		tgt := startTLSTarget(t, pki, "delegated-ip", "127.0.0.1:0", nil, "127.0.0.1")
		wk := startTLSTarget(t, pki, "wk", "127.0.0.1:0", wellKnownHandler(fmt.Sprintf(`{"m.server": %q}`, tgt.addr.String()), "", nil), "wk2.test")
		r.mapHost("wk2.test", 443, wk.addr)
		run(t, "wk2.test", r, want{"delegated-ip", tgt.addr.String(), "", "ip"})
	})
	for _, service := range []string{"matrix-fed", "matrix"} {
		t.Run("well-known delegation without port, SRV _"+service, func(t *testing.T) {
			r := newFakeResolver()
			wk := startTLSTarget(t, pki, "wk", "127.0.0.1:0", wellKnownHandler(`{"m.server":"deleg-srv.test"}`, "", nil), "wk3.test")
			r.mapHost("wk3.test", 443, wk.addr)
			// The certificate names the delegated host, never the SRV target.
			tgt := startTLSTarget(t, pki, "srv", "127.0.0.1:0", nil, "deleg-srv.test")
			r.mapSRV(service, "deleg-srv.test", "srv-target.test.", 9002)
			r.mapHost("srv-target.test", 9002, tgt.addr)
			if service == "matrix" {
				// A _matrix-fed record that offers nothing ("." target)
				// counts as no record.
				r.mapSRV("matrix-fed", "deleg-srv.test", ".", 0)
			}
			run(t, "wk3.test", r, want{"srv", "deleg-srv.test", "deleg-srv.test", "srv:" + service})
		})
	}
	t.Run("well-known delegation without port and no SRV uses 8448", func(t *testing.T) {
		r := newFakeResolver()
		wk := startTLSTarget(t, pki, "wk", "127.0.0.1:0", wellKnownHandler(`{"m.server":"deleg-plain.test"}`, "", nil), "wk4.test")
		r.mapHost("wk4.test", 443, wk.addr)
		tgt := startTLSTarget(t, pki, "plain", "127.0.0.1:0", nil, "deleg-plain.test")
		r.mapHost("deleg-plain.test", 8448, tgt.addr)
		run(t, "wk4.test", r, want{"plain", "deleg-plain.test", "deleg-plain.test", "default-port"})
	})
	for _, service := range []string{"matrix-fed", "matrix"} {
		t.Run("no well-known, SRV _"+service, func(t *testing.T) {
			r := newFakeResolver()
			// .well-known answers 404.
			wk := startTLSTarget(t, pki, "wk", "127.0.0.1:0", http.NotFoundHandler(), "nowk.test")
			r.mapHost("nowk.test", 443, wk.addr)
			tgt := startTLSTarget(t, pki, "srv", "127.0.0.1:0", nil, "nowk.test")
			r.mapSRV(service, "nowk.test", "other-host.test", 9003)
			r.mapHost("other-host.test", 9003, tgt.addr)
			run(t, "nowk.test", r, want{"srv", "nowk.test", "nowk.test", "srv:" + service})
		})
	}
	t.Run("no well-known, no SRV uses 8448", func(t *testing.T) {
		r := newFakeResolver()
		// Nothing listens for .well-known at all.
		tgt := startTLSTarget(t, pki, "fallback", "127.0.0.1:0", nil, "bare.test")
		r.mapHost("bare.test", 8448, tgt.addr)
		run(t, "bare.test", r, want{"fallback", "bare.test", "bare.test", "default-port"})
	})
	t.Run("invalid well-known falls back", func(t *testing.T) {
		for i, body := range []string{`not json`, `{"m.server": 5}`, `{}`, `{"m.server": "bad name!"}`, `["m.server"]`} {
			r := newFakeResolver()
			host := fmt.Sprintf("badwk%d.test", i)
			wk := startTLSTarget(t, pki, "wk", "127.0.0.1:0", wellKnownHandler(body, "", nil), host)
			r.mapHost(host, 443, wk.addr)
			tgt := startTLSTarget(t, pki, "fallback", "127.0.0.1:0", nil, host)
			r.mapHost(host, 8448, tgt.addr)
			run(t, host, r, want{"fallback", host, host, "default-port"})
		}
	})
	t.Run("certificate for the wrong name is refused", func(t *testing.T) {
		r := newFakeResolver()
		tgt := startTLSTarget(t, pki, "wrong", "127.0.0.1:0", nil, "someone-else.test")
		r.mapHost("victim.test", 8448, tgt.addr)
		c := newDiscoveryClient(t, pki, r, clock, true)
		_, err := c.Do(context.Background(), Request{Method: http.MethodGet, Destination: "victim.test", Path: "/x", Unauthenticated: true})
		var certErr *tls.CertificateVerificationError
		if !errors.As(err, &certErr) {
			t.Fatalf("got %v, want a certificate verification error", err)
		}
	})
}

func TestDiscovery_WellKnownCaching(t *testing.T) {
	pki := newTestPKI(t)
	cases := []struct {
		cacheControl string
		ttl          time.Duration
	}{
		{"", 24 * time.Hour},
		{"max-age=600", 10 * time.Minute},
		{"public, max-age=7200", 2 * time.Hour},
		{"max-age=31536000", 48 * time.Hour},
		{"no-store", time.Minute},
		{"max-age=1", time.Minute},
	}
	for i, tc := range cases {
		t.Run(tc.cacheControl, func(t *testing.T) {
			clock := &discoveryClock{now: time.Unix(1_700_000_000, 0)}
			r := newFakeResolver()
			var fetches atomic.Int64
			host := fmt.Sprintf("cache%d.test", i)
			wk := startTLSTarget(t, pki, "wk", "127.0.0.1:0", wellKnownHandler(`{"m.server":"x.test:1"}`, tc.cacheControl, &fetches), host)
			r.mapHost(host, 443, wk.addr)
			c := newDiscoveryClient(t, pki, r, clock, true)
			ctx := context.Background()
			resolveOK := func() {
				t.Helper()
				d, err := c.discovery.delegate(ctx, host)
				if err != nil || !d.delegated || d.hostHeader() != "x.test:1" {
					t.Fatalf("delegate = %+v, %v", d, err)
				}
			}
			resolveOK()
			clock.Advance(tc.ttl - time.Second)
			resolveOK()
			if n := fetches.Load(); n != 1 {
				t.Fatalf("fetches within TTL = %d, want 1", n)
			}
			clock.Advance(2 * time.Second)
			resolveOK()
			if n := fetches.Load(); n != 2 {
				t.Fatalf("fetches after TTL = %d, want 2", n)
			}
		})
	}
}

func TestDiscovery_WellKnownFailureBackoff(t *testing.T) {
	pki := newTestPKI(t)
	clock := &discoveryClock{now: time.Unix(1_700_000_000, 0)}
	r := newFakeResolver()
	var fetches atomic.Int64
	var healthy atomic.Bool
	wk := startTLSTarget(t, pki, "wk", "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if !healthy.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"m.server":"up.test:1"}`))
	}), "flaky.test")
	r.mapHost("flaky.test", 443, wk.addr)
	c := newDiscoveryClient(t, pki, r, clock, true)
	ctx := context.Background()
	delegated := func() bool {
		d, err := c.discovery.delegate(ctx, "flaky.test")
		if err != nil {
			t.Fatal(err)
		}
		return d.delegated
	}
	// Failure 1 is cached for a minute, failure 2 for two, and so on.
	for i, wait := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
		if delegated() {
			t.Fatal("delegated while .well-known fails")
		}
		if n := fetches.Load(); n != int64(i+1) {
			t.Fatalf("fetches = %d, want %d", n, i+1)
		}
		clock.Advance(wait - time.Second)
		if delegated() || fetches.Load() != int64(i+1) {
			t.Fatalf("failure %d not cached for %s", i+1, wait)
		}
		clock.Advance(time.Second)
	}
	healthy.Store(true)
	if !delegated() {
		t.Fatal("not delegated after recovery")
	}
	if got := failureBackoff(100); got != time.Hour {
		t.Fatalf("back-off cap = %s, want 1h", got)
	}
}

func TestDiscovery_WellKnownRedirects(t *testing.T) {
	pki := newTestPKI(t)
	clock := &discoveryClock{now: time.Unix(1_700_000_000, 0)}
	r := newFakeResolver()
	final := startTLSTarget(t, pki, "final", "127.0.0.1:0", wellKnownHandler(`{"m.server":"moved.test:7"}`, "", nil), "elsewhere.test")
	r.mapHost("elsewhere.test", 443, final.addr)
	redirector := startTLSTarget(t, pki, "redirect", "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.Host == "redir.test":
			http.Redirect(w, req, "https://elsewhere.test/.well-known/matrix/server", http.StatusFound)
		case req.URL.Path == "/.well-known/matrix/server":
			http.Redirect(w, req, "/step", http.StatusMovedPermanently)
		default:
			http.Redirect(w, req, "/.well-known/matrix/server", http.StatusTemporaryRedirect)
		}
	}), "redir.test", "loop.test")
	r.mapHost("redir.test", 443, redirector.addr)
	r.mapHost("loop.test", 443, redirector.addr)
	c := newDiscoveryClient(t, pki, r, clock, true)
	ctx := context.Background()

	d, err := c.discovery.delegate(ctx, "redir.test")
	if err != nil || !d.delegated || d.hostHeader() != "moved.test:7" {
		t.Fatalf("redirect not followed: %+v, %v", d, err)
	}
	d, err = c.discovery.delegate(ctx, "loop.test")
	if err != nil || d.delegated {
		t.Fatalf("redirect loop: %+v, %v; want fallback to the server name", d, err)
	}
	c.discovery.mu.Lock()
	loopErr := c.discovery.wellKnown["loop.test"].err
	c.discovery.mu.Unlock()
	if !errors.Is(loopErr, errRedirectLoop) {
		t.Fatalf("cached error %v, want a redirect loop", loopErr)
	}
}

func TestCacheTTL(t *testing.T) {
	for header, want := range map[string]time.Duration{
		"":                      24 * time.Hour,
		"max-age=3600":          time.Hour,
		"MAX-AGE=120, private":  2 * time.Minute,
		`max-age="300"`:         5 * time.Minute,
		"max-age=-5":            24 * time.Hour,
		"max-age=abc":           24 * time.Hour,
		"max-age=0":             time.Minute,
		"no-cache":              time.Minute,
		"max-age=1000000000000": 48 * time.Hour,
	} {
		if got := cacheTTL(header); got != want {
			t.Errorf("cacheTTL(%q) = %s, want %s", header, got, want)
		}
	}
}

func TestDiscovery_ConcurrentLookupsShareOneFetch(t *testing.T) {
	pki := newTestPKI(t)
	clock := &discoveryClock{now: time.Unix(1_700_000_000, 0)}
	r := newFakeResolver()
	var fetches atomic.Int64
	release := make(chan struct{})
	wk := startTLSTarget(t, pki, "wk", "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fetches.Add(1)
		<-release
		_, _ = w.Write([]byte(`{"m.server":"shared.test:1"}`))
	}), "busy.test")
	r.mapHost("busy.test", 443, wk.addr)
	c := newDiscoveryClient(t, pki, r, clock, true)
	const n = 8
	results := make(chan string, n)
	for range n {
		go func() {
			d, err := c.discovery.delegate(context.Background(), "busy.test")
			if err != nil {
				results <- err.Error()
				return
			}
			results <- d.hostHeader()
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.discovery.mu.Lock()
		call := c.discovery.inflight["busy.test"]
		waiting := call != nil && call.waiters == n-1
		c.discovery.mu.Unlock()
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lookups never all waited on one fetch")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	for range n {
		if got := <-results; got != "shared.test:1" {
			t.Fatalf("lookup = %s", got)
		}
	}
	if f := fetches.Load(); f != 1 {
		t.Fatalf("%d .well-known fetches, want 1", f)
	}
}
