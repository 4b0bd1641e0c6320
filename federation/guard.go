package federation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// ErrAddressRefused is matched when an outbound connection would reach a
// loopback, private, link-local or otherwise non-public address and
// private addresses are not allowed.
var ErrAddressRefused = errors.New("outbound address refused")

// Resolver is the DNS seam of outbound federation: server discovery and
// every dial go through it, so tests can point names at loopback
// listeners. SystemResolver is the real one.
type Resolver interface {
	// LookupHostPort returns where a connection to host:port goes: the
	// A/AAAA addresses of host (host itself when it is an IP literal), each
	// with port.
	LookupHostPort(ctx context.Context, host string, port uint16) ([]netip.AddrPort, error)
	// LookupSRV returns the SRV records of _service._tcp.name, ordered by
	// priority and weight. No records is an empty result or an error.
	LookupSRV(ctx context.Context, service, name string) ([]*net.SRV, error)
}

// SystemResolver resolves with the operating system's DNS (through
// net.Resolver). The zero value uses net.DefaultResolver.
type SystemResolver struct {
	Resolver *net.Resolver
}

var _ Resolver = SystemResolver{}

func (s SystemResolver) resolver() *net.Resolver {
	if s.Resolver != nil {
		return s.Resolver
	}
	return net.DefaultResolver
}

// LookupHostPort implements Resolver.
func (s SystemResolver) LookupHostPort(ctx context.Context, host string, port uint16) ([]netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip, port)}, nil
	}
	ips, err := s.resolver().LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), port))
	}
	return out, nil
}

// LookupSRV implements Resolver.
func (s SystemResolver) LookupSRV(ctx context.Context, service, name string) ([]*net.SRV, error) {
	_, srvs, err := s.resolver().LookupSRV(ctx, service, "tcp", name)
	return srvs, err
}

// Special-purpose ranges refused besides what netip classifies.
var refusedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and broadcast
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	netip.MustParsePrefix("100::/64"),       // discard-only
}

// nat64 embeds IPv4 addresses in IPv6; the embedded address is checked.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// addressGuard decides which addresses outbound connections may reach.
type addressGuard struct {
	allowPrivate bool
}

// check returns an error matching ErrAddressRefused for addresses that
// are not public unicast, unless private addresses are allowed.
func (g addressGuard) check(ip netip.Addr) error {
	if g.allowPrivate {
		return nil
	}
	ip = ip.Unmap().WithZone("")
	if nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	reason := ""
	switch {
	case !ip.IsValid():
		reason = "invalid"
	case ip.IsUnspecified():
		reason = "unspecified"
	case ip.IsLoopback():
		reason = "loopback"
	case ip.IsPrivate():
		reason = "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		reason = "link-local"
	case ip.IsMulticast():
		reason = "multicast"
	default:
		for _, p := range refusedPrefixes {
			if p.Contains(ip) {
				reason = "reserved"
				break
			}
		}
	}
	if reason != "" {
		return fmt.Errorf("%w: %s is a %s address (federation.allow_private_addresses is off)", ErrAddressRefused, ip, reason)
	}
	return nil
}

// control runs just before each connect(2), on the exact address being
// connected to, so no resolution trick can slip a private address past
// the guard.
func (g addressGuard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse dial address %q", ErrAddressRefused, address)
	}
	return g.check(ap.Addr())
}

// guardedDialer opens TCP connections to host:port through the Resolver,
// refusing addresses the guard forbids before any connection is made.
type guardedDialer struct {
	resolver Resolver
	guard    addressGuard
	dialer   net.Dialer
}

func newGuardedDialer(resolver Resolver, guard addressGuard, connectTimeout time.Duration) *guardedDialer {
	return &guardedDialer{
		resolver: resolver,
		guard:    guard,
		dialer:   net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second, Control: guard.control},
	}
}

// dial connects to the first reachable address of host:port.
func (d *guardedDialer) dial(ctx context.Context, host string, port uint16) (net.Conn, error) {
	addrs, err := d.resolver.LookupHostPort(ctx, host, port)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	var errs []error
	for _, ap := range addrs {
		if err := d.guard.check(ap.Addr()); err != nil {
			errs = append(errs, err)
			continue
		}
		conn, err := d.dialer.DialContext(ctx, "tcp", ap.String())
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("connect to %s: %w", net.JoinHostPort(host, fmt.Sprint(port)), errors.Join(errs...))
}

// dialAddr is dial for "host:port" strings as net/http passes them.
func (d *guardedDialer) dialAddr(ctx context.Context, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("dial %q: bad port", addr)
	}
	return d.dial(ctx, host, uint16(port))
}

// ServerPolicy is the federation allow / deny list (federation.allow and
// federation.deny). It applies both ways: we send nothing to a refused
// server and answer its requests with 403 M_FORBIDDEN. Names match exactly
// (server names are case-sensitive). The zero value allows everyone.
type ServerPolicy struct {
	// Allow, when not empty, lists the only servers we federate with.
	Allow []string
	// Deny lists servers we never federate with; it wins over Allow.
	Deny []string
}

// Allowed reports whether we federate with name.
func (p ServerPolicy) Allowed(name string) bool {
	for _, d := range p.Deny {
		if d == name {
			return false
		}
	}
	if len(p.Allow) == 0 {
		return true
	}
	for _, a := range p.Allow {
		if a == name {
			return true
		}
	}
	return false
}

func (p ServerPolicy) validate() error {
	for _, list := range [][]string{p.Allow, p.Deny} {
		for _, name := range list {
			if _, err := parseServerName(name); err != nil {
				return fmt.Errorf("federation allow/deny list: %w", err)
			}
		}
	}
	return nil
}
