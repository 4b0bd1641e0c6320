package rooms

import (
	"strings"
	"unicode/utf8"
)

// validUserIDForAuth is the user-ID validation the auth rules apply to the
// keys of power levels' users (v10 9.3, v12 10.3) and to the create event's
// additional_creators (v12 1.4): the appendix's "User Identifiers" grammar,
// accepting historical localparts as federation must: "@", a non-empty
// localpart without ':' or NUL, ':', a valid server name, at most 255
// bytes in all.
func validUserIDForAuth(s string) bool {
	if len(s) > MaxIDBytes || !utf8.ValidString(s) || !strings.HasPrefix(s, "@") {
		return false
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok || local == "" || strings.ContainsRune(local, 0) {
		return false
	}
	return validServerNameForAuth(server)
}

// validServerNameForAuth checks the appendix's server name grammar:
// host [":" port], where host is an IPv4 literal, a bracketed IPv6 literal
// or a DNS name of letters, digits, '-' and '.', and port is 1 to 5 digits.
func validServerNameForAuth(s string) bool {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		host, port = s[:end+1], s[end+1:]
		if !validIPv6Literal(host[1 : len(host)-1]) {
			return false
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i:]
		}
		if host == "" || len(host) > 255 {
			return false
		}
		for i := 0; i < len(host); i++ {
			c := host[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				return false
			}
		}
	}
	if port == "" {
		return true
	}
	digits := port[1:]
	if port[0] != ':' || digits == "" || len(digits) > 5 {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}

// validIPv6Literal accepts the characters of an IPv6 address (hex digits,
// ':' and '.' for an embedded IPv4 part), 2 to 45 of them.
func validIPv6Literal(s string) bool {
	if len(s) < 2 || len(s) > 45 || !strings.Contains(s, ":") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
			return false
		}
	}
	return true
}
