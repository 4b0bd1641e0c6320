package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func envMap(m map[string]string) LookupEnv {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestDefault_Laptop(t *testing.T) {
	cfg, err := Load("", envMap(nil))
	if err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if cfg.ServerName != "localhost:8448" || cfg.DataDir != "./ferry-data" ||
		cfg.Federation.Listen != "127.0.0.1:8448" || cfg.Host.Listen != "127.0.0.1:8009" {
		t.Errorf("defaults = %+v", cfg)
	}
	if !cfg.Federation.VerifyTLS || cfg.Federation.AllowPrivateAddresses || cfg.Rooms.DefaultVersion != "12" {
		t.Errorf("federation/rooms defaults = %+v %+v", cfg.Federation, cfg.Rooms)
	}
	if got := cfg.DatabaseURL(); got != "sqlite://ferry-data/ferry.db" {
		t.Errorf("DatabaseURL() = %q", got)
	}
}

// TestRender_RoundTrip checks the `ferry init` template: every key is
// present and rendering then parsing gives back the configuration.
func TestRender_RoundTrip(t *testing.T) {
	cfgs := map[string]*Config{"default": Default()}
	custom := Default()
	custom.ServerName = "example.org"
	custom.Federation.Allow = []string{"a.example", "[::1]:8448"}
	custom.Federation.WellKnownServer = "matrix.example.org:443"
	custom.Host.Token = `to"k\en` + "\x01"
	custom.Log.Format = "json"
	cfgs["custom"] = custom

	for name, want := range cfgs {
		t.Run(name, func(t *testing.T) {
			text, err := Render(want)
			if err != nil {
				t.Fatal(err)
			}
			got := &Config{}
			md, err := toml.Decode(string(text), got)
			if err != nil {
				t.Fatalf("rendered file does not parse: %v\n%s", err, text)
			}
			for _, key := range Keys() {
				if !md.IsDefined(strings.Split(key, ".")...) {
					t.Errorf("template lacks key %s", key)
				}
			}
			if len(md.Undecoded()) != 0 {
				t.Errorf("template has unknown keys %v", md.Undecoded())
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParse_UnknownKeys(t *testing.T) {
	doc := "server_nam = \"x\"\n[federation]\nlisten_addr = \"0.0.0.0:1\"\n[metrics]\nport = 1\n"
	err := Parse(strings.NewReader(doc), Default())
	if err == nil {
		t.Fatal("unknown keys accepted")
	}
	for _, want := range []string{"server_nam: unknown key", "federation.listen_addr: unknown key", "metrics.port: unknown key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestParse_WrongType(t *testing.T) {
	err := Parse(strings.NewReader("[federation]\nverify_tls = \"yes\"\n"), Default())
	if err == nil || !strings.Contains(err.Error(), "verify_tls") {
		t.Fatalf("error = %v, want one naming verify_tls", err)
	}
	err = Parse(strings.NewReader("server_name = \n"), Default())
	if err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("syntax error = %v, want one with a line number", err)
	}
}

func TestLoad_EnvNames(t *testing.T) {
	env := map[string]string{
		"FERRY_SERVER_NAME":                        "hs1.test:18448",
		"FERRY_DATA_DIR":                           "/tmp/hs1",
		"FERRY_FEDERATION_LISTEN":                  "0.0.0.0:18448",
		"FERRY_FEDERATION_VERIFY_TLS":              "false",
		"FERRY_FEDERATION_ALLOW_PRIVATE_ADDRESSES": "true",
		"FERRY_FEDERATION_ALLOW":                   " a.test, b.test:1 ,",
		"FERRY_FEDERATION_MAX_REQUEST_BODY_BYTES":  "1048576",
		"FERRY_HOST_LISTEN":                        "0.0.0.0:18009",
		"FERRY_HOST_TOKEN":                         "s3cret",
		"FERRY_HOST_AUTO_REGISTER_USERS":           "1",
		"FERRY_ROOMS_DEFAULT_VERSION":              "10",
		"FERRY_LOG_LEVEL":                          "debug",
	}
	cfg, err := Load("", envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.ServerName = "hs1.test:18448"
	want.DataDir = "/tmp/hs1"
	want.Federation.Listen = "0.0.0.0:18448"
	want.Federation.VerifyTLS = false
	want.Federation.AllowPrivateAddresses = true
	want.Federation.Allow = []string{"a.test", "b.test:1"}
	want.Federation.MaxRequestBodyBytes = 1 << 20
	want.Host.Listen = "0.0.0.0:18009"
	want.Host.Token = "s3cret"
	want.Host.AutoRegisterUsers = true
	want.Rooms.DefaultVersion = "10"
	want.Log.Level = "debug"
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

// TestApplyEnv_EveryKey sets every key from the environment, so a field of
// a kind the environment parser does not handle fails here.
func TestApplyEnv_EveryKey(t *testing.T) {
	for _, key := range Keys() {
		cfg := Default()
		name := EnvName(key)
		if name == "" || !strings.HasPrefix(name, "FERRY_") {
			t.Fatalf("EnvName(%q) = %q", key, name)
		}
		value := "1"
		if err := ApplyEnv(cfg, envMap(map[string]string{name: value})); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		// "1" changes every key except verify_tls, already true.
		if reflect.DeepEqual(cfg, Default()) && key != "federation.verify_tls" {
			t.Errorf("%s=1 changed nothing", name)
		}
	}
}

func TestApplyEnv_BadValues(t *testing.T) {
	env := map[string]string{
		"FERRY_FEDERATION_VERIFY_TLS":             "maybe",
		"FERRY_FEDERATION_MAX_REQUEST_BODY_BYTES": "8MB",
	}
	_, err := Load("", envMap(env))
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for _, want := range []string{
		`federation.verify_tls (from FERRY_FEDERATION_VERIFY_TLS): "maybe": expected true or false`,
		`federation.max_request_body_bytes (from FERRY_FEDERATION_MAX_REQUEST_BODY_BYTES): "8MB": expected an integer`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestLoad_FileThenEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.toml")
	doc := "server_name = \"file.test\"\n[federation]\nlisten = \"127.0.0.1:9000\"\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, envMap(map[string]string{"FERRY_FEDERATION_LISTEN": "127.0.0.1:9001"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "file.test" || cfg.Federation.Listen != "127.0.0.1:9001" {
		t.Errorf("got server_name %q listen %q", cfg.ServerName, cfg.Federation.Listen)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml"), nil); err == nil {
		t.Error("missing file accepted")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string
	}{
		{"server name with invalid characters", func(c *Config) { c.ServerName = "bad_name!" }, `server_name: "bad_name!": hostname "bad_name!" may only contain`},
		{"empty server name", func(c *Config) { c.ServerName = "" }, "server_name: must not be empty"},
		{"server name port out of range", func(c *Config) { c.ServerName = "a.test:70000" }, `server_name: "a.test:70000": port "70000" is not a number from 1 to 65535`},
		{"server name port zero", func(c *Config) { c.ServerName = "a.test:0" }, "is not a number from 1 to 65535"},
		{"bad IPv6", func(c *Config) { c.ServerName = "[zz]:1" }, "is not an IPv6 address"},
		{"bad IPv4", func(c *Config) { c.ServerName = "256.1.1.1:8448" }, `"256.1.1.1" is not an IPv4 address`},
		{"long port", func(c *Config) { c.ServerName = "a.test:000001" }, "is not a number from 1 to 65535"},
		{"data dir", func(c *Config) { c.DataDir = " " }, "data_dir: must not be empty"},
		{"listen not host:port", func(c *Config) { c.Federation.Listen = "abc" }, `federation.listen: "abc": expected host:port`},
		{"listen bad port", func(c *Config) { c.Federation.Listen = "127.0.0.1:99999" }, `federation.listen: "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`},
		{"listen bad host", func(c *Config) { c.Federation.Listen = "a b:1" }, `host "a b" is not an IP address or hostname`},
		{"cert without key", func(c *Config) { c.Federation.TLSCert = "x.pem" }, "federation.tls_cert: \"x.pem\": tls_cert and tls_key must be set together"},
		{"plain http and cert", func(c *Config) { c.Federation.TLSCert, c.Federation.TLSKey, c.Federation.PlainHTTP = "c", "k", true }, "federation.plain_http: plain_http = true conflicts"},
		{"deny entry", func(c *Config) { c.Federation.Deny = []string{"ok.test", "not ok"} }, `federation.deny: "not ok"`},
		{"notary", func(c *Config) { c.Federation.TrustedKeyServers = []string{"x:y"} }, `federation.trusted_key_servers: "x:y": port "y"`},
		{"well-known", func(c *Config) { c.Federation.WellKnownServer = "https://x" }, "federation.well_known_server"},
		{"body limit", func(c *Config) { c.Federation.MaxRequestBodyBytes = 10 }, "federation.max_request_body_bytes: \"10\": must be at least 65536"},
		{"host listen", func(c *Config) { c.Host.Listen = "8009" }, `host.listen: "8009": expected host:port, e.g. 127.0.0.1:8448, or unix:/path/to/socket`},
		{"host unix empty", func(c *Config) { c.Host.Listen = "unix:" }, "host.listen: \"unix:\": expected unix:/path/to/socket"},
		{"host public without token", func(c *Config) { c.Host.Listen = "0.0.0.0:8009" }, "host.token: required when host.listen (0.0.0.0:8009) is not a loopback address"},
		{"webhook url", func(c *Config) { c.Host.WebhookURL = "ftp://x" }, "host.webhook_url: \"ftp://x\": expected an http:// or https:// URL"},
		{"webhook url without secret", func(c *Config) { c.Host.WebhookURL = "https://host.example/hook" }, "host.webhook_secret: required with host.webhook_url"},
		{"webhook secret alone", func(c *Config) { c.Host.WebhookSecret = "s" }, "host.webhook_secret: set without host.webhook_url"},
		{"room version", func(c *Config) { c.Rooms.DefaultVersion = "I.1" }, `rooms.default_version: "I.1": expected one of 10, 12`},
		{"database", func(c *Config) { c.Database.URL = "mysql://x" }, "database.url: \"mysql://x\": expected sqlite://<path>"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, `log.level: "loud": expected trace, debug, info, warn or error`},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, `log.format: "xml": expected json, console or auto`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("accepted %+v", c)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FieldError", err)
			}
		})
	}
}

func TestValidate_Accepts(t *testing.T) {
	tests := []func(c *Config){
		func(c *Config) { c.ServerName = "example.org" },
		func(c *Config) { c.ServerName = "1.2.3.4:8448" },
		func(c *Config) { c.ServerName = "[1234:5678::abcd]:443" },
		func(c *Config) { c.ServerName = "[::1]" },
		func(c *Config) { c.Federation.Listen = ":8448" },
		func(c *Config) { c.Federation.Listen = "127.0.0.1:0" },
		func(c *Config) { c.Federation.Listen = "[::]:8448" },
		func(c *Config) { c.Host.Listen = "unix:/run/ferry/host.sock" },
		func(c *Config) { c.Host.Listen = "[::1]:8009" },
		func(c *Config) { c.Host.Listen, c.Host.Token = "0.0.0.0:8009", "t" },
		func(c *Config) { c.Database.URL = "sqlite:///var/lib/ferry/ferry.db" },
		func(c *Config) { c.Federation.PlainHTTP = true },
		func(c *Config) { c.Rooms.DefaultVersion = "10" },
	}
	for i, modify := range tests {
		c := Default()
		modify(c)
		if err := c.Validate(); err != nil {
			t.Errorf("case %d: %v", i, err)
		}
	}
}

func TestValidate_ReportsAll(t *testing.T) {
	c := Default()
	c.ServerName = "x y"
	c.Log.Level = "z"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "server_name") || !strings.Contains(err.Error(), "log.level") {
		t.Errorf("error %q should name both keys", err)
	}
}

func TestHostListenUnix(t *testing.T) {
	c := Default()
	if _, ok := c.HostListenUnix(); ok {
		t.Error("TCP listen reported as unix socket")
	}
	c.Host.Listen = "unix:/tmp/h.sock"
	if p, ok := c.HostListenUnix(); !ok || p != "/tmp/h.sock" {
		t.Errorf("HostListenUnix() = %q, %v", p, ok)
	}
}

func TestUnknownEnv(t *testing.T) {
	got := UnknownEnv([]string{"FERRY_SERVER_NAME=a", "FERRY_FEDERATION_LISTN=x", "HOME=/root", "FERRY_HOST_TOKEN=", "FERRY_X"})
	if !reflect.DeepEqual(got, []string{"FERRY_FEDERATION_LISTN", "FERRY_X"}) {
		t.Errorf("UnknownEnv = %v", got)
	}
}
