package config

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
)

// fileTemplate is the commented configuration file `ferry init` writes and
// deploy/ferry.toml is generated from. Every key appears, set to the value
// of the Config it is rendered from; a test checks that rendering Default()
// and parsing it back gives Default() again and that no key is missing.
const fileTemplate = `# Ferry configuration.
#
# Every key can be overridden by an environment variable:
# FERRY_<SECTION>_<KEY> for keys in a section (FERRY_FEDERATION_LISTEN),
# FERRY_<KEY> for top-level keys (FERRY_SERVER_NAME). Booleans are
# true/false, lists are comma-separated. Unknown keys are errors.

# The Matrix server name: the part after ":" in user IDs, and the name our
# signatures are filed under. hostname[:port], an IPv4 address or an
# [IPv6] literal. Other servers find us through it (directly, via
# .well-known delegation or SRV), so it must not change once rooms exist.
server_name = {{q .ServerName}}

# Where Ferry keeps its state: signing.key (the server's ed25519 signing
# key, in Synapse's format), old_signing.keys (retired keys, see the
# README), tls.crt/tls.key (a self-signed certificate, when no certificate
# is configured) and the SQLite database. Back this directory up; losing
# signing.key means other servers see a new identity.
data_dir = {{q .DataDir}}

[federation]
# Address of the public federation listener (host:port). 8448 is the port
# other servers try when nothing else is published. Use 0.0.0.0:8448 to be
# reachable from other machines.
listen = {{q .Federation.Listen}}

# PEM certificate chain and private key for the federation listener. Leave
# both empty to have a self-signed certificate generated into data_dir:
# fine for local tests, but real servers will not accept it.
tls_cert = {{q .Federation.TLSCert}}
tls_key = {{q .Federation.TLSKey}}

# Serve plain HTTP instead of HTTPS, for running behind a reverse proxy
# that terminates TLS and forwards to this listener.
plain_http = {{.Federation.PlainHTTP}}

# Check other servers' TLS certificates on outbound requests. Turn off only
# between test servers that use self-signed certificates.
verify_tls = {{.Federation.VerifyTLS}}

# Extra PEM file of certificate authorities trusted for outbound requests,
# in addition to the system's.
ca_file = {{q .Federation.CAFile}}

# Allow outbound requests to loopback, private and link-local addresses.
# Off by default so that a remote server name cannot make us probe the
# local network; test deployments on one machine need it on.
allow_private_addresses = {{.Federation.AllowPrivateAddresses}}

# Server names we federate with. Empty means every server.
allow = {{list .Federation.Allow}}

# Server names we never federate with; deny wins over allow.
deny = {{list .Federation.Deny}}

# Notary servers asked for another server's signing keys when it cannot be
# reached directly. Empty means keys are only fetched directly.
trusted_key_servers = {{list .Federation.TrustedKeyServers}}

# Delegation: when set, /.well-known/matrix/server answers
# {"m.server": "<this value>"}, telling other servers to connect there for
# our server name. Only useful when this listener is reached on port 443 of
# the server name's host (usually via a reverse proxy).
well_known_server = {{q .Federation.WellKnownServer}}

# Largest request body accepted, in bytes. A full transaction (50 PDUs of
# up to 64 KiB plus 100 EDUs) must fit.
max_request_body_bytes = {{.Federation.MaxRequestBodyBytes}}

# Join rooms with partial state ("faster joins", send_join with
# omit_members): a big room is usable in seconds and its full state is
# fetched in the background. Off by default: until the full state is in,
# Ferry refuses to serve the room's state or to let others join through it.
partial_state_joins = {{.Federation.PartialStateJoins}}

[host]
# Address of the host API, the private interface your own product uses to
# act as its users: host:port, or unix:/path/to/socket. Keep it on
# loopback or a socket unless a token is set and the network is trusted.
listen = {{q .Host.Listen}}

# Bearer token the host must present (Authorization: Bearer <token>).
# Required when listen is not a loopback address.
token = {{q .Host.Token}}

# URL that receives every host event as a POST, in addition to the event
# stream at /_ferry/v1/events. Empty means no webhook.
webhook_url = {{q .Host.WebhookURL}}

# Secret for the HMAC-SHA256 signature on webhook deliveries.
webhook_secret = {{q .Host.WebhookSecret}}

# Create local users on first use instead of requiring PUT /users/{userId}.
auto_register_users = {{.Host.AutoRegisterUsers}}

[rooms]
# Room version of rooms created here: "12" (current Matrix) or "10" (the
# long-term-stable version, MIMI I.1). Joining remote rooms works for both
# whatever this says.
default_version = {{q .Rooms.DefaultVersion}}

[database]
# sqlite://<path>. Empty means sqlite://<data_dir>/ferry.db.
url = {{q .Database.URL}}

[log]
# trace, debug, info, warn or error.
level = {{q .Log.Level}}

# json, console, or auto (console when stderr is a terminal, else json).
format = {{q .Log.Format}}

[metrics]
# Address (host:port) of a separate listener serving only the Prometheus
# metrics at /metrics. Empty means /metrics is served on the host listener
# only.
listen = {{q .Metrics.Listen}}
`

var tmpl = template.Must(template.New("ferry.toml").Funcs(template.FuncMap{
	"q":    quote,
	"list": quoteList,
}).Parse(fileTemplate))

// Render writes cfg as a fully commented TOML file.
func Render(cfg *Config) ([]byte, error) {
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, cfg); err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	return buf.Bytes(), nil
}

// quote writes s as a TOML basic string. TOML's escapes are JSON's, minus
// the \x form strconv.Quote would use, so control characters become \u.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func quoteList(list []string) string {
	items := make([]string, len(list))
	for i, s := range list {
		items[i] = quote(s)
	}
	return "[" + strings.Join(items, ", ") + "]"
}
