package rooms

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Identifier grammar (spec appendix "Identifier Grammar"). The types below
// are strings that passed their parser; the zero value of each is the
// empty, invalid identifier. Parsers never panic and say which rule an
// input breaks.

// MaxServerNameBytes bounds a server name: the grammar allows a 255-byte
// DNS name plus ":" and a 5-digit port.
const MaxServerNameBytes = 255 + 1 + 5

// hashIDLength is the length, without sigil, of a URL-safe unpadded base64
// SHA-256 digest: event IDs (room versions 4+) and version 12 room IDs.
const hashIDLength = 43

// ErrInvalidID is matched (errors.Is) by every identifier parsing failure.
var ErrInvalidID = errors.New("invalid identifier")

// IDError says which identifier failed which grammar rule.
type IDError struct {
	Kind   string // "server name", "user ID", "room ID", "event ID", "room alias"
	Input  string // the rejected input, possibly truncated for display
	Reason string // the rule it breaks
}

func (e *IDError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Kind, e.Input, e.Reason)
}

// Unwrap lets callers match ErrInvalidID.
func (e *IDError) Unwrap() error { return ErrInvalidID }

func idError(kind, input, reason string) *IDError {
	const maxShown = 80
	if len(input) > maxShown {
		cut := maxShown
		for cut > 0 && !utf8.RuneStart(input[cut]) {
			cut--
		}
		input = input[:cut] + "..."
	}
	return &IDError{Kind: kind, Input: input, Reason: reason}
}

// ServerName is a homeserver's name: hostname [":" port], where hostname
// is an IPv4 literal, a bracketed IPv6 literal or a DNS name. Server names
// are case-sensitive.
type ServerName string

// ParseServerName checks s against the server name grammar. An IPv4
// literal's four numbers must each be at most 255 and a port at most
// 65535; a DNS name is 1 to 255 letters, digits, '-' and '.'.
func ParseServerName(s string) (ServerName, error) {
	if reason := serverNameProblem(s); reason != "" {
		return "", idError("server name", s, reason)
	}
	return ServerName(s), nil
}

func serverNameProblem(s string) string {
	if s == "" {
		return "empty"
	}
	if len(s) > MaxServerNameBytes {
		return fmt.Sprintf("longer than %d bytes", MaxServerNameBytes)
	}
	host, port, hasPort, reason := splitHostPort(s)
	if reason != "" {
		return reason
	}
	if hasPort {
		if reason := portProblem(port); reason != "" {
			return reason
		}
	}
	if host[0] == '[' {
		return ipv6Problem(host[1 : len(host)-1])
	}
	if looksLikeIPv4(host) {
		return ipv4Problem(host)
	}
	return dnsNameProblem(host)
}

// splitHostPort separates "host[:port]", honouring brackets around IPv6.
func splitHostPort(s string) (host, port string, hasPort bool, reason string) {
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false, "IPv6 literal has no closing ']'"
		}
		host, rest := s[:end+1], s[end+1:]
		switch {
		case rest == "":
			return host, "", false, ""
		case rest[0] != ':':
			return "", "", false, "unexpected text after the IPv6 literal"
		default:
			return host, rest[1:], true, ""
		}
	}
	if i := strings.IndexByte(s, ':'); i >= 0 {
		if i == 0 {
			return "", "", false, "empty hostname"
		}
		return s[:i], s[i+1:], true, ""
	}
	return s, "", false, ""
}

func portProblem(port string) string {
	if port == "" || len(port) > 5 {
		return "port must be 1 to 5 digits"
	}
	n := 0
	for i := 0; i < len(port); i++ {
		c := port[i]
		if c < '0' || c > '9' {
			return "port must be 1 to 5 digits"
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return "port is greater than 65535"
	}
	return ""
}

// looksLikeIPv4 reports whether host is four dot-separated groups of
// digits: such a host is an IPv4 literal, not a DNS name.
func looksLikeIPv4(host string) bool {
	groups := strings.Split(host, ".")
	if len(groups) != 4 {
		return false
	}
	for _, g := range groups {
		if g == "" {
			return false
		}
		for i := 0; i < len(g); i++ {
			if g[i] < '0' || g[i] > '9' {
				return false
			}
		}
	}
	return true
}

func ipv4Problem(host string) string {
	for _, g := range strings.Split(host, ".") {
		if len(g) > 3 {
			return "IPv4 literal number has more than 3 digits"
		}
		n := 0
		for i := 0; i < len(g); i++ {
			n = n*10 + int(g[i]-'0')
		}
		if n > 255 {
			return "IPv4 literal number is greater than 255"
		}
	}
	return ""
}

func ipv6Problem(addr string) string {
	if len(addr) < 2 || len(addr) > 45 {
		return "IPv6 literal must be 2 to 45 characters"
	}
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
			return fmt.Sprintf("IPv6 literal contains %q", c)
		}
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil || !ip.Is6() {
		return "not an IPv6 address (RFC 3513 section 2.2)"
	}
	return ""
}

func dnsNameProblem(host string) string {
	if len(host) > 255 {
		return "DNS name longer than 255 characters"
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Sprintf("hostname contains %q (allowed: letters, digits, '-', '.')", c)
		}
	}
	return ""
}

// String returns the server name.
func (s ServerName) String() string { return string(s) }

// Host returns the hostname without the port (an IPv6 literal keeps its
// brackets).
func (s ServerName) Host() string {
	host, _, _ := s.split()
	return host
}

// Port returns the explicit port, or 0 and false when there is none.
func (s ServerName) Port() (int, bool) {
	_, port, ok := s.split()
	if !ok || port == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(port); i++ {
		n = n*10 + int(port[i]-'0')
	}
	return n, true
}

func (s ServerName) split() (host, port string, hasPort bool) {
	if s == "" {
		return "", "", false
	}
	host, port, hasPort, _ = splitHostPort(string(s))
	return host, port, hasPort
}

// UserID is "@localpart:server".
type UserID string

// ParseUserID checks s against the user ID grammar servers must accept
// over federation ("Historical User IDs"): '@', a localpart of any valid
// Unicode code points except ':' and NUL (possibly empty), ':', a valid
// server name, at most 255 bytes in all.
func ParseUserID(s string) (UserID, error) {
	local, server, reason := splitSigilID(s, '@', "user ID")
	if reason == "" {
		reason = historicalLocalpartProblem(local)
	}
	if reason == "" {
		reason = serverNameProblem(server)
	}
	if reason != "" {
		return "", idError("user ID", s, reason)
	}
	return UserID(s), nil
}

// ParseUserIDStrict checks s against the grammar for user IDs a server
// creates today: as ParseUserID, but the localpart must be non-empty and
// only use a-z, 0-9, '.', '_', '=', '-', '/' and '+'. Ferry applies it to
// the IDs of its own users.
func ParseUserIDStrict(s string) (UserID, error) {
	local, server, reason := splitSigilID(s, '@', "user ID")
	if reason == "" {
		reason = strictLocalpartProblem(local)
	}
	if reason == "" {
		reason = serverNameProblem(server)
	}
	if reason != "" {
		return "", idError("user ID", s, reason)
	}
	return UserID(s), nil
}

// NewUserID builds and strictly checks the ID of a user of server.
func NewUserID(localpart string, server ServerName) (UserID, error) {
	return ParseUserIDStrict("@" + localpart + ":" + string(server))
}

// splitSigilID splits "<sigil>local:server" at the first ':' and checks
// the sigil, the 255-byte limit and UTF-8 validity.
func splitSigilID(s string, sigil byte, kind string) (local, server, reason string) {
	switch {
	case s == "" || s[0] != sigil:
		return "", "", fmt.Sprintf("a %s starts with %q", kind, sigil)
	case len(s) > MaxIDBytes:
		return "", "", fmt.Sprintf("longer than %d bytes", MaxIDBytes)
	case !utf8.ValidString(s):
		return "", "", "not valid UTF-8"
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok {
		return "", "", "no ':' before the server name"
	}
	return local, server, ""
}

func historicalLocalpartProblem(local string) string {
	if strings.IndexByte(local, 0) >= 0 {
		return "localpart contains NUL"
	}
	return ""
}

func strictLocalpartProblem(local string) string {
	if local == "" {
		return "empty localpart"
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0) {
			return fmt.Sprintf("localpart contains %q (allowed: a-z 0-9 . _ = - / +)", c)
		}
	}
	return ""
}

// String returns the user ID.
func (u UserID) String() string { return string(u) }

// Localpart returns the text between '@' and the first ':'.
func (u UserID) Localpart() string {
	local, _, _ := strings.Cut(strings.TrimPrefix(string(u), "@"), ":")
	return local
}

// Server returns the server part.
func (u UserID) Server() ServerName { return ServerName(serverOfID(string(u))) }

// IsCompliant reports whether the ID also meets the grammar for newly
// created user IDs; the spec calls the others non-compliant.
func (u UserID) IsCompliant() bool {
	_, err := ParseUserIDStrict(string(u))
	return err == nil
}

// RoomID is a room's ID: "!opaque:server" (room versions up to 11) or "!"
// followed by the create event's reference hash in URL-safe unpadded
// base64 (room version 12).
type RoomID string

// ParseRoomID accepts a room ID of either form, for places where the room
// version is not known yet (URLs, lookups).
func ParseRoomID(s string) (RoomID, error) {
	if reason := roomIDProblem(s, 0); reason != "" {
		return "", idError("room ID", s, reason)
	}
	return RoomID(s), nil
}

// ParseRoomIDFor accepts only the room ID form room version v uses.
func ParseRoomIDFor(v Version, s string) (RoomID, error) {
	if reason := roomIDProblem(s, v.RoomIDs); reason != "" {
		return "", idError("room ID", s, reason)
	}
	return RoomID(s), nil
}

// roomIDProblem checks s against scheme, or either form when scheme is 0.
func roomIDProblem(s string, scheme RoomIDScheme) string {
	switch {
	case s == "" || s[0] != '!':
		return "a room ID starts with '!'"
	case len(s) > MaxIDBytes:
		return fmt.Sprintf("longer than %d bytes", MaxIDBytes)
	case !utf8.ValidString(s):
		return "not valid UTF-8"
	}
	hasServer := strings.IndexByte(s, ':') >= 0
	switch {
	case scheme == 0 && hasServer, scheme == RoomIDOpaque:
		local, server, ok := strings.Cut(s[1:], ":")
		switch {
		case !ok:
			return "no ':' before the server name (this room version's IDs are !opaque:server)"
		case local == "":
			return "empty localpart"
		case strings.IndexByte(local, 0) >= 0:
			return "localpart contains NUL"
		}
		return serverNameProblem(server)
	case scheme == 0, scheme == RoomIDFromCreate:
		if hasServer {
			return "has a server part (this room version's IDs are ! and the create event's hash)"
		}
		return hashIDProblem(s[1:])
	default:
		return fmt.Sprintf("unknown room ID scheme %d", scheme)
	}
}

// hashIDProblem checks that s is 43 characters of URL-safe base64.
func hashIDProblem(s string) string {
	if len(s) != hashIDLength {
		return fmt.Sprintf("must be %d characters of URL-safe base64 after the sigil, got %d bytes", hashIDLength, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Sprintf("contains %q, which is not URL-safe base64", c)
		}
	}
	return ""
}

// RoomIDFromCreateEventID returns the version 12 room ID named by a create
// event's ID: the same hash with the sigil '!'.
func RoomIDFromCreateEventID(id EventID) RoomID {
	return RoomID("!" + strings.TrimPrefix(string(id), "$"))
}

// String returns the room ID.
func (r RoomID) String() string { return string(r) }

// Server returns the server part of an "!opaque:server" room ID, or false
// for a version 12 room ID, which has none.
func (r RoomID) Server() (ServerName, bool) {
	_, server, ok := strings.Cut(string(r), ":")
	return ServerName(server), ok
}

// CreateEventID returns the ID of the create event a version 12 room ID
// names, or false for a room ID with a server part.
func (r RoomID) CreateEventID() (EventID, bool) {
	if hashIDProblem(strings.TrimPrefix(string(r), "!")) != "" {
		return "", false
	}
	return EventID("$" + string(r)[1:]), true
}

// EventID is an event's ID. In every room version Ferry speaks (4 and
// later) it is "$" followed by the event's reference hash in URL-safe
// unpadded base64.
type EventID string

// ParseEventID checks s against the event ID format of room versions 4
// and later: '$' and 43 URL-safe base64 characters.
func ParseEventID(s string) (EventID, error) {
	if reason := eventIDProblem(s); reason != "" {
		return "", idError("event ID", s, reason)
	}
	return EventID(s), nil
}

func eventIDProblem(s string) string {
	if s == "" || s[0] != '$' {
		return "an event ID starts with '$'"
	}
	return hashIDProblem(s[1:])
}

// String returns the event ID.
func (e EventID) String() string { return string(e) }

// RoomAlias is "#localpart:server".
type RoomAlias string

// ParseRoomAlias checks s against the room alias grammar: '#', a
// non-empty localpart of valid code points except ':' and NUL, ':', a
// valid server name, at most 255 bytes in all.
func ParseRoomAlias(s string) (RoomAlias, error) {
	local, server, reason := splitSigilID(s, '#', "room alias")
	switch {
	case reason != "":
	case local == "":
		reason = "empty localpart"
	case strings.IndexByte(local, 0) >= 0:
		reason = "localpart contains NUL"
	default:
		reason = serverNameProblem(server)
	}
	if reason != "" {
		return "", idError("room alias", s, reason)
	}
	return RoomAlias(s), nil
}

// String returns the alias.
func (a RoomAlias) String() string { return string(a) }

// Localpart returns the text between '#' and the first ':'.
func (a RoomAlias) Localpart() string {
	local, _, _ := strings.Cut(strings.TrimPrefix(string(a), "#"), ":")
	return local
}

// Server returns the server part.
func (a RoomAlias) Server() ServerName { return ServerName(serverOfID(string(a))) }
