package federation

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestAddressGuard_Check(t *testing.T) {
	refused := []string{
		"127.0.0.1", "127.5.6.7", "::1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
		"169.254.169.254", "fe80::1", "fc00::1", "fd12:3456::1", "0.0.0.0", "::", "0.1.2.3",
		"100.64.0.1", "224.0.0.1", "ff02::1", "255.255.255.255", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
		"64:ff9b::7f00:1", "64:ff9b::a00:1",
	}
	allowed := []string{"1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "172.32.0.1", "64:ff9b::808:808", "::ffff:8.8.8.8"}
	strict := addressGuard{}
	for _, s := range refused {
		if err := strict.check(netip.MustParseAddr(s)); !errors.Is(err, ErrAddressRefused) {
			t.Errorf("check(%s) = %v, want ErrAddressRefused", s, err)
		}
		if err := (addressGuard{allowPrivate: true}).check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("allowPrivate: check(%s) = %v", s, err)
		}
	}
	for _, s := range allowed {
		if err := strict.check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("check(%s) = %v, want nil", s, err)
		}
	}
	// The dial-time hook sees the exact address connected to.
	if err := strict.control("tcp4", "127.0.0.1:8448", nil); !errors.Is(err, ErrAddressRefused) {
		t.Errorf("control(127.0.0.1) = %v", err)
	}
	if err := strict.control("tcp6", "[::1]:8448", nil); !errors.Is(err, ErrAddressRefused) {
		t.Errorf("control(::1) = %v", err)
	}
	if err := strict.control("tcp4", "8.8.8.8:8448", nil); err != nil {
		t.Errorf("control(8.8.8.8) = %v", err)
	}
}

// TestClient_RefusesPrivateAddresses: with allow_private_addresses off, a
// server name resolving to 127.0.0.1 is refused before any connection is
// made, for a name with a port and for one that goes through .well-known
// and the 8448 fallback.
func TestClient_RefusesPrivateAddresses(t *testing.T) {
	pki := newTestPKI(t)
	clock := &discoveryClock{now: time.Unix(1_700_000_000, 0)}
	r := newFakeResolver()
	tgt := startTLSTarget(t, pki, "victim", "127.0.0.1:0", nil, "evil.test", "evil-port.test", "127.0.0.1")
	r.mapHost("evil.test", 8448, tgt.addr)
	r.mapHost("evil.test", 443, tgt.addr)
	r.mapHost("evil-port.test", 9000, tgt.addr)
	c := newDiscoveryClient(t, pki, r, clock, false)

	for _, dest := range []string{"evil-port.test:9000", "evil.test", tgt.addr.String()} {
		_, err := c.Do(context.Background(), Request{Method: http.MethodGet, Destination: dest, Path: "/_matrix/federation/v1/version", Unauthenticated: true})
		if !errors.Is(err, ErrAddressRefused) {
			t.Errorf("%s: got %v, want ErrAddressRefused", dest, err)
		}
	}
	if n := tgt.conns.Load(); n != 0 {
		t.Fatalf("%d connections reached the listener", n)
	}

	// The same listener is reachable once private addresses are allowed,
	// so the refusal above was the guard's doing.
	open := newDiscoveryClient(t, pki, r, clock, true)
	if got := getSeen(t, open, "evil-port.test:9000"); got.Target != "victim" {
		t.Fatalf("allowed client reached %+v", got)
	}
}

func TestServerPolicy(t *testing.T) {
	cases := []struct {
		p    ServerPolicy
		name string
		want bool
	}{
		{ServerPolicy{}, "a.test", true},
		{ServerPolicy{Deny: []string{"a.test"}}, "a.test", false},
		{ServerPolicy{Deny: []string{"a.test"}}, "a.test:8448", true},
		{ServerPolicy{Allow: []string{"a.test"}}, "a.test", true},
		{ServerPolicy{Allow: []string{"a.test"}}, "b.test", false},
		{ServerPolicy{Allow: []string{"a.test"}, Deny: []string{"a.test"}}, "a.test", false},
	}
	for _, tc := range cases {
		if got := tc.p.Allowed(tc.name); got != tc.want {
			t.Errorf("%+v.Allowed(%s) = %v, want %v", tc.p, tc.name, got, tc.want)
		}
	}
	if err := (ServerPolicy{Deny: []string{"not a name"}}).validate(); err == nil {
		t.Error("invalid deny entry accepted")
	}
}

func TestClient_DeniedDestination(t *testing.T) {
	pki := newTestPKI(t)
	r := newFakeResolver()
	tgt := startTLSTarget(t, pki, "denied", "127.0.0.1:0", nil, "denied.test")
	r.mapHost("denied.test", 8448, tgt.addr)
	c, err := NewClient(ClientConfig{ServerName: "me.test", Keys: testKeys(t, 1), Resolver: r, RootCAs: pki.pool,
		AllowPrivateAddresses: true, Policy: ServerPolicy{Deny: []string{"denied.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Do(context.Background(), Request{Method: http.MethodGet, Destination: "denied.test", Path: "/x"}); !errors.Is(err, ErrServerDenied) {
		t.Fatalf("got %v, want ErrServerDenied", err)
	}
	if tgt.conns.Load() != 0 {
		t.Fatal("a denied server was contacted")
	}
}
