package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration. The zero value is not useful; start
// from Default. Field tags give the TOML key (and so the environment name).
type Config struct {
	// ServerName is the Matrix server name: the part after the colon in
	// user IDs, the name our signatures are filed under. It never changes
	// for the life of a deployment. Default "localhost:8448".
	ServerName string `toml:"server_name"`
	// DataDir holds the signing key, the self-signed TLS certificate and
	// the SQLite database. Created on start if missing. Default
	// "./ferry-data".
	DataDir string `toml:"data_dir"`

	Federation Federation `toml:"federation"`
	Host       Host       `toml:"host"`
	Rooms      Rooms      `toml:"rooms"`
	Database   Database   `toml:"database"`
	Log        Log        `toml:"log"`
	Metrics    Metrics    `toml:"metrics"`
}

// Federation configures the public listener and outbound federation.
type Federation struct {
	// Listen is the host:port of the federation listener. Default
	// "127.0.0.1:8448"; use "0.0.0.0:8448" to be reachable.
	Listen string `toml:"listen"`
	// TLSCert and TLSKey are PEM files. When both are empty (and PlainHTTP
	// is false) a self-signed certificate for the server name is generated
	// into DataDir, which is enough for local trials.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// PlainHTTP serves HTTP without TLS, for use behind a reverse proxy
	// that terminates TLS. Default false.
	PlainHTTP bool `toml:"plain_http"`
	// VerifyTLS makes outbound requests check other servers' certificates.
	// Default true; turn off only between test servers with self-signed
	// certificates.
	VerifyTLS bool `toml:"verify_tls"`
	// CAFile is an extra PEM bundle of CAs trusted for outbound requests,
	// added to the system pool. Default empty.
	CAFile string `toml:"ca_file"`
	// AllowPrivateAddresses lets outbound requests reach loopback, private
	// and link-local addresses. Default false (SSRF protection); test
	// deployments on one machine need true.
	AllowPrivateAddresses bool `toml:"allow_private_addresses"`
	// Allow lists the only server names we federate with; empty means all.
	Allow []string `toml:"allow"`
	// Deny lists server names we never federate with; it wins over Allow.
	Deny []string `toml:"deny"`
	// TrustedKeyServers are notaries asked for other servers' keys when
	// fetching directly fails. Default empty: fetch directly only.
	TrustedKeyServers []string `toml:"trusted_key_servers"`
	// WellKnownServer, when set, is served as the delegation target at
	// /.well-known/matrix/server ({"m.server": ...}). Default empty: not
	// served.
	WellKnownServer string `toml:"well_known_server"`
	// MaxRequestBodyBytes bounds inbound request bodies. Default 8 MiB:
	// a transaction of 50 PDUs of 64 KiB plus 100 EDUs fits with room.
	MaxRequestBodyBytes int64 `toml:"max_request_body_bytes"`
	// PartialStateJoins makes joins through other servers ask for partial
	// state (send_join with omit_members=true, "faster joins"): a room is
	// usable once its state without membership events is verified, and
	// its full state is fetched and verified in the background. Default
	// false: while a room is partial, Ferry refuses to serve its state and
	// to be the resident of joins, and an event accepted then on the
	// strength of its own auth events reaches the host before the full
	// state can show it disallowed (it is rejected then). Turn it on to
	// join big rooms in seconds.
	PartialStateJoins bool `toml:"partial_state_joins"`
}

// Host configures the host API, the private plane the host product uses.
type Host struct {
	// Listen is host:port or "unix:/path/to/socket". Default
	// "127.0.0.1:8009".
	Listen string `toml:"listen"`
	// Token is the bearer token the host presents. Required when Listen is
	// not a loopback address or a unix socket.
	Token string `toml:"token"`
	// WebhookURL, when set, receives every host event as a signed POST.
	WebhookURL string `toml:"webhook_url"`
	// WebhookSecret keys the HMAC signature on webhook deliveries.
	WebhookSecret string `toml:"webhook_secret"`
	// AutoRegisterUsers creates local users on first use instead of
	// requiring PUT /users/{userId} first. Default false.
	AutoRegisterUsers bool `toml:"auto_register_users"`
}

// Rooms configures room creation.
type Rooms struct {
	// DefaultVersion is the room version of new rooms: "12" (default) or
	// "10" (the LTS version).
	DefaultVersion string `toml:"default_version"`
}

// Database configures persistence.
type Database struct {
	// URL is "sqlite://<path>"; empty means sqlite://<data_dir>/ferry.db.
	URL string `toml:"url"`
}

// Log configures logging.
type Log struct {
	// Level is trace, debug, info (default), warn or error.
	Level string `toml:"level"`
	// Format is "json", "console" or "auto" (default: console when stderr
	// is a terminal, JSON otherwise).
	Format string `toml:"format"`
}

// Metrics configures where the Prometheus metrics are served.
type Metrics struct {
	// Listen is the host:port of a separate listener serving only
	// /metrics, for a scraper that must not reach the host API. Default
	// empty: /metrics is served on the host listener only.
	Listen string `toml:"listen"`
}

// Defaults that other code (the Dockerfile, docs, tests) refers to.
const (
	DefaultServerName          = "localhost:8448"
	DefaultDataDir             = "./ferry-data"
	DefaultFederationListen    = "127.0.0.1:8448"
	DefaultHostListen          = "127.0.0.1:8009"
	DefaultRoomVersion         = "12"
	DefaultMaxRequestBodyBytes = 8 << 20
)

// Default returns the configuration used when there is no file and no
// environment: everything on loopback, data in ./ferry-data.
func Default() *Config {
	return &Config{
		ServerName: DefaultServerName,
		DataDir:    DefaultDataDir,
		Federation: Federation{
			Listen:              DefaultFederationListen,
			VerifyTLS:           true,
			Allow:               []string{},
			Deny:                []string{},
			TrustedKeyServers:   []string{},
			MaxRequestBodyBytes: DefaultMaxRequestBodyBytes,
		},
		Host:     Host{Listen: DefaultHostListen},
		Rooms:    Rooms{DefaultVersion: DefaultRoomVersion},
		Database: Database{},
		Log:      Log{Level: "info", Format: "auto"},
	}
}

// Parse decodes a TOML document over cfg, leaving keys the document does
// not mention as they were. Keys Ferry does not know are errors, so a typo
// never silently falls back to a default.
func Parse(r io.Reader, cfg *Config) error {
	md, err := toml.NewDecoder(r).Decode(cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("line %d: %s", perr.Position.Line, perr.Message)
		}
		return err
	}
	var errs []error
	for _, key := range md.Undecoded() {
		errs = append(errs, &FieldError{Key: key.String(), Err: errUnknownKey})
	}
	return errors.Join(errs...)
}

// LookupEnv is the signature of os.LookupEnv, injected so tests need not
// touch the process environment.
type LookupEnv func(key string) (string, bool)

// Load builds the configuration: defaults, then the file at path if path is
// not empty, then the environment, then validation. Every problem found is
// reported at once, each naming its key.
func Load(path string, env LookupEnv) (*Config, error) {
	cfg := Default()
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
		err = Parse(f, cfg)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if env != nil {
		if err := ApplyEnv(cfg, env); err != nil {
			return nil, fmt.Errorf("environment: %w", err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// DatabaseURL returns Database.URL, or the SQLite file in DataDir when it
// is empty.
func (c *Config) DatabaseURL() string {
	if c.Database.URL != "" {
		return c.Database.URL
	}
	return "sqlite://" + filepath.ToSlash(filepath.Join(c.DataDir, "ferry.db"))
}

// HostListenUnix reports whether the host API listens on a unix socket,
// and its path.
func (c *Config) HostListenUnix() (path string, ok bool) {
	return strings.CutPrefix(c.Host.Listen, "unix:")
}
