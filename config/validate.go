package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// FieldError is one problem with one key. Validate and Load return several
// of them joined with errors.Join.
type FieldError struct {
	Key    string // dotted key, "federation.listen"
	Value  string // the offending value as written, if any
	Source string // the environment variable it came from, if any
	Err    error
}

func (e *FieldError) Error() string {
	key := e.Key
	if e.Source != "" {
		key += " (from " + e.Source + ")"
	}
	if e.Value != "" {
		return fmt.Sprintf("%s: %q: %v", key, e.Value, e.Err)
	}
	return fmt.Sprintf("%s: %v", key, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

var errUnknownKey = errors.New("unknown key (see `ferry init` for the keys Ferry knows)")

// RoomVersions are the room versions Ferry implements. The list is
// repeated here rather than taken from package rooms because config
// imports no Ferry package; a test in cmd/ferry keeps the two in step.
var RoomVersions = []string{"10", "12"}

// Validate checks every key and returns all problems joined, each a
// *FieldError naming its key and what was expected.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, value string, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Value: value, Err: fmt.Errorf(format, args...)})
	}
	check := func(key, value string, err error) {
		if err != nil {
			errs = append(errs, &FieldError{Key: key, Value: value, Err: err})
		}
	}

	check("server_name", c.ServerName, validServerName(c.ServerName))
	if strings.TrimSpace(c.DataDir) == "" {
		bad("data_dir", "", "must not be empty")
	}

	f := &c.Federation
	check("federation.listen", f.Listen, validListen(f.Listen))
	if (f.TLSCert == "") != (f.TLSKey == "") {
		bad("federation.tls_cert", f.TLSCert, "tls_cert and tls_key must be set together")
	}
	if f.PlainHTTP && f.TLSCert != "" {
		bad("federation.plain_http", "", "plain_http = true conflicts with tls_cert: choose one")
	}
	for _, list := range []struct {
		key   string
		names []string
	}{{"federation.allow", f.Allow}, {"federation.deny", f.Deny}, {"federation.trusted_key_servers", f.TrustedKeyServers}} {
		for _, name := range list.names {
			check(list.key, name, validServerName(name))
		}
	}
	if f.WellKnownServer != "" {
		check("federation.well_known_server", f.WellKnownServer, validServerName(f.WellKnownServer))
	}
	if f.MaxRequestBodyBytes < 64<<10 {
		bad("federation.max_request_body_bytes", strconv.FormatInt(f.MaxRequestBodyBytes, 10),
			"must be at least 65536 (one PDU is up to 64 KiB)")
	}

	h := &c.Host
	if path, ok := c.HostListenUnix(); ok {
		if path == "" {
			bad("host.listen", h.Listen, "expected unix:/path/to/socket")
		}
	} else if err := validListen(h.Listen); err != nil {
		check("host.listen", h.Listen, fmt.Errorf("%w, or unix:/path/to/socket", err))
	} else if h.Token == "" && !isLoopbackListen(h.Listen) {
		bad("host.token", "", "required when host.listen (%s) is not a loopback address", h.Listen)
	}
	if h.WebhookURL != "" {
		u, err := url.Parse(h.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("host.webhook_url", h.WebhookURL, "expected an http:// or https:// URL")
		}
		if h.WebhookSecret == "" {
			bad("host.webhook_secret", "", "required with host.webhook_url: the host checks each delivery's signature with it")
		}
	}
	if h.WebhookSecret != "" && h.WebhookURL == "" {
		bad("host.webhook_secret", "", "set without host.webhook_url")
	}

	if !contains(RoomVersions, c.Rooms.DefaultVersion) {
		bad("rooms.default_version", c.Rooms.DefaultVersion, "expected one of %s", strings.Join(RoomVersions, ", "))
	}

	if m := c.Metrics.Listen; m != "" {
		if err := validListen(m); err != nil {
			check("metrics.listen", m, err)
		} else if (m == f.Listen || m == h.Listen) && !strings.HasSuffix(m, ":0") { // port 0: each picks its own
			bad("metrics.listen", m, "must differ from federation.listen and host.listen (leave it empty to serve /metrics on the host listener)")
		}
	}

	if u := c.Database.URL; u != "" {
		path, ok := strings.CutPrefix(u, "sqlite://")
		if !ok || path == "" {
			bad("database.url", u, "expected sqlite://<path> (or empty for <data_dir>/ferry.db)")
		}
	}

	if !contains([]string{"trace", "debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", c.Log.Level, "expected trace, debug, info, warn or error")
	}
	if !contains([]string{"json", "console", "auto"}, c.Log.Format) {
		bad("log.format", c.Log.Format, "expected json, console or auto")
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// validListen accepts host:port where port is 0-65535 (0 picks a free port,
// which tests use) and host is empty (all interfaces), an IP or a hostname.
func validListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("expected host:port, e.g. 127.0.0.1:8448")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || port == "" {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return fmt.Errorf("host %q is not an IP address or hostname", host)
	}
	return nil
}

func isLoopbackListen(s string) bool {
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validServerName checks the grammar of the server-server API: a DNS name,
// an IPv4 dotted quad or a bracketed IPv6 literal, then an optional port
// from 1 to 65535.
func validServerName(s string) error {
	if s == "" {
		return errors.New("must not be empty; expected hostname[:port]")
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return errors.New("unterminated IPv6 literal; expected [address]:port")
		}
		host, port = s[:end+1], s[end+1:]
		if port != "" && !strings.HasPrefix(port, ":") {
			return errors.New("unexpected characters after the IPv6 literal")
		}
		port = strings.TrimPrefix(port, ":")
		ip := net.ParseIP(host[1 : len(host)-1])
		if ip == nil || ip.To4() != nil && !strings.Contains(host, ":") {
			return fmt.Errorf("%s is not an IPv6 address", host)
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i+1:]
			if host == "" {
				return errors.New("empty hostname; expected hostname[:port]")
			}
		}
		if !validHostname(host) {
			return fmt.Errorf("hostname %q may only contain letters, digits, '.' and '-' (at most 255)", host)
		}
		if looksLikeIPv4(host) && net.ParseIP(host) == nil {
			return fmt.Errorf("%q is not an IPv4 address", host)
		}
	}
	if port != "" || strings.HasSuffix(s, ":") {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || len(port) > 5 || port[0] == '+' || port[0] == '-' {
			return fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
	}
	return nil
}

// looksLikeIPv4 reports whether h is four dot-separated groups of digits,
// which the grammar reads as an IPv4 literal rather than a DNS name.
func looksLikeIPv4(h string) bool {
	groups := strings.Split(h, ".")
	if len(groups) != 4 {
		return false
	}
	for _, g := range groups {
		if g == "" || strings.Trim(g, "0123456789") != "" {
			return false
		}
	}
	return true
}

// validHostname allows what the server-name grammar allows for a DNS name
// or IPv4 literal: [A-Za-z0-9.-], 1 to 255 characters.
func validHostname(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
