package federation

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ferry-matrix/ferry/rooms"
)

// defaultFederationPort is the IANA-registered matrix-fed port used when a
// server name (or its delegation) gives none and no SRV record applies.
const defaultFederationPort = 8448

// maxServerNameLen bounds a server name. The grammar allows a 255-character
// DNS name plus a port; IDs that embed the name are capped at 255 bytes in
// total, so a longer name can never appear in a valid ID anyway.
const maxServerNameLen = 255

// errBadServerName is matched by every server-name parsing failure.
var errBadServerName = errors.New("invalid server name")

// serverName is a parsed server name (or delegated server name from
// /.well-known/matrix/server), following the appendix grammar
// hostname [":" port], where hostname is an IPv4 dotted quad, a bracketed
// IPv6 literal or a DNS name of [A-Za-z0-9.-].
type serverName struct {
	raw     string     // exactly as given; server names compare case-sensitively
	host    string     // without brackets for IPv6 literals
	ip      netip.Addr // valid when host is an IP literal
	port    uint16     // the explicit port, when hasPort
	hasPort bool
}

// isIP reports whether the host part is an IP literal.
func (s serverName) isIP() bool { return s.ip.IsValid() }

// hostForHeader is the host part as it appears in a Host header or URL:
// IPv6 literals in brackets.
func (s serverName) hostForHeader() string {
	if s.ip.IsValid() && s.ip.Is6() {
		return "[" + s.host + "]"
	}
	return s.host
}

// parseServerName checks s against the server-name grammar. It never
// panics, whatever s holds.
func parseServerName(s string) (serverName, error) {
	bad := func(reason string) (serverName, error) {
		return serverName{}, fmt.Errorf("%w %q: %s", errBadServerName, truncateForError(s), reason)
	}
	if s == "" {
		return bad("empty")
	}
	if len(s) > maxServerNameLen {
		return bad("longer than 255 bytes")
	}
	// The grammar is rooms'; what follows splits the name for discovery
	// and refuses the few grammatical names nobody can connect to (port 0,
	// IPv4 octets with leading zeros).
	if _, err := rooms.ParseServerName(s); err != nil {
		return serverName{}, fmt.Errorf("%w: %w", errBadServerName, err)
	}
	out := serverName{raw: s}
	hostPart, portPart := s, ""
	hasPort := false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return bad("unterminated IPv6 literal")
		}
		hostPart = s[1:end]
		rest := s[end+1:]
		switch {
		case rest == "":
		case rest[0] == ':':
			portPart, hasPort = rest[1:], true
		default:
			return bad("unexpected characters after IPv6 literal")
		}
		ip, err := netip.ParseAddr(hostPart)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return bad("not an IPv6 address in brackets")
		}
		out.host, out.ip = hostPart, ip
	} else {
		if i := strings.IndexByte(s, ':'); i >= 0 {
			hostPart, portPart, hasPort = s[:i], s[i+1:], true
		}
		if hostPart == "" {
			return bad("empty hostname")
		}
		for i := 0; i < len(hostPart); i++ {
			c := hostPart[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				return bad("hostname may contain only letters, digits, '-' and '.'")
			}
		}
		if looksLikeDottedQuad(hostPart) {
			ip, err := netip.ParseAddr(hostPart)
			if err != nil || !ip.Is4() {
				return bad("not a valid IPv4 address")
			}
			out.ip = ip
		}
		out.host = hostPart
	}
	if hasPort {
		if portPart == "" || len(portPart) > 5 {
			return bad("port must be 1 to 5 digits")
		}
		for i := 0; i < len(portPart); i++ {
			if portPart[i] < '0' || portPart[i] > '9' {
				return bad("port must be digits only")
			}
		}
		n, err := strconv.Atoi(portPart)
		if err != nil || n < 1 || n > 65535 {
			return bad("port out of range 1-65535")
		}
		out.port, out.hasPort = uint16(n), true
	}
	return out, nil
}

// looksLikeDottedQuad reports whether h has the IPv4address shape of the
// grammar (four dot-separated groups of 1-3 digits). Such a hostname is an
// IP literal and must be a valid address.
func looksLikeDottedQuad(h string) bool {
	parts := strings.Split(h, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if len(p) == 0 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

// truncateForError keeps hostile input from bloating error messages and logs.
func truncateForError(s string) string {
	const limit = 100
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}
