package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"github.com/ferry-matrix/ferry"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

func envMap(m map[string]string) config.LookupEnv {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// lockedBuffer collects the server's log output across goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running is a `ferry serve` started in-process.
type running struct {
	inst   *ferry.Server
	stop   func() int // cancels, waits, returns the exit status
	stderr *lockedBuffer
}

// runServe starts `ferry serve` with an empty config file and env, the way
// the acceptance command does (FERRY_* variables only), and waits until it
// listens.
func startServe(t *testing.T, env map[string]string) *running {
	t.Helper()
	if _, set := env["FERRY_HOST_LISTEN"]; !set {
		// Tests run in parallel: never the fixed default port.
		env = maps.Clone(env)
		env["FERRY_HOST_LISTEN"] = "127.0.0.1:0"
	}
	cfgFile := filepath.Join(t.TempDir(), "empty.toml")
	if err := os.WriteFile(cfgFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *ferry.Server, 1)
	exit := make(chan int, 1)
	stderr := &lockedBuffer{}
	go func() {
		exit <- serve(ctx, []string{"-config", cfgFile}, envMap(env), stderr, func(i *ferry.Server) { ready <- i })
	}()
	r := &running{stderr: stderr}
	stopped := false
	var code int
	r.stop = func() int {
		if !stopped {
			stopped = true
			cancel()
			code = <-exit
		}
		return code
	}
	t.Cleanup(func() { r.stop() })
	select {
	case r.inst = <-ready:
	case code := <-exit:
		cancel()
		t.Fatalf("serve exited with %d before listening:\n%s", code, stderr)
	}
	return r
}

// tlsClient trusts exactly the self-signed certificate in dataDir.
func tlsClient(t *testing.T, dataDir, host string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(dataDir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("tls.crt holds no certificate")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host},
	}}
	t.Cleanup(client.CloseIdleConnections)
	return client
}

func get(t *testing.T, client *http.Client, url string) []byte {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return body
}

// fetchKeys gets the key document over loopback TLS and checks its
// signature under the key it publishes.
func fetchKeys(t *testing.T, r *running, dataDir, serverName string) (keyID string, public string) {
	t.Helper()
	client := tlsClient(t, dataDir, "localhost")
	body := get(t, client, r.inst.Federation().URL()+"/_matrix/key/v2/server")
	var doc struct {
		ServerName   string `json:"server_name"`
		ValidUntilTS int64  `json:"valid_until_ts"`
		VerifyKeys   map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.ServerName != serverName || len(doc.VerifyKeys) != 1 {
		t.Fatalf("key document %s", body)
	}
	for id, k := range doc.VerifyKeys {
		keyID, public = id, k.Key
	}
	obj, err := rooms.ParseJSON(body)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := rooms.DecodeBase64(public)
	if err != nil {
		t.Fatal(err)
	}
	if err := rooms.VerifyJSONSignature(obj.(map[string]any), serverName, keyID, pub); err != nil {
		t.Errorf("key document signature: %v", err)
	}
	// The same check through the function remote key fetching uses.
	now := time.Now().UnixMilli()
	parsed, err := keys.ParseServerKeys(body, serverName, now)
	if err != nil {
		t.Fatal(err)
	}
	if lead := parsed.ValidUntilTS - now; lead < 23*3600*1000 || lead > 25*3600*1000 {
		t.Errorf("valid_until_ts is %d ms ahead, want about a day", lead)
	}
	return keyID, public
}

func TestServe_KeysAndVersionOverTLS(t *testing.T) {
	dataDir := t.TempDir()
	env := map[string]string{
		"FERRY_DATA_DIR":          dataDir,
		"FERRY_FEDERATION_LISTEN": "127.0.0.1:0",
		"FERRY_SERVER_NAME":       "localhost:18448",
	}
	first := startServe(t, env)
	if !strings.HasPrefix(first.inst.Federation().URL(), "https://127.0.0.1:") {
		t.Fatalf("federation URL %q", first.inst.Federation().URL())
	}
	keyID, public := fetchKeys(t, first, dataDir, "localhost:18448")
	if keyID != first.inst.Keys().Current[0].KeyID() {
		t.Errorf("published %s, signing with %s", keyID, first.inst.Keys().Current[0].KeyID())
	}

	client := tlsClient(t, dataDir, "localhost")
	body := get(t, client, first.inst.Federation().URL()+"/_matrix/federation/v1/version")
	var v struct {
		Server struct{ Name, Version string } `json:"server"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Server.Name != "Ferry" || v.Server.Version != versionString() {
		t.Errorf("version: %s (%v)", body, err)
	}

	logs := first.stderr.String()
	for _, want := range []string{`"message":"federation listening"`, `"key_id":"` + keyID + `"`, `"message":"request"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if code := first.stop(); code != 0 {
		t.Fatalf("graceful stop exited %d:\n%s", code, first.stderr)
	}

	// Restarting on the same data directory keeps the identity.
	second := startServe(t, env)
	keyID2, public2 := fetchKeys(t, second, dataDir, "localhost:18448")
	if keyID2 != keyID || public2 != public {
		t.Errorf("after restart the key is %s %s, was %s %s", keyID2, public2, keyID, public)
	}
	if !strings.Contains(second.stderr.String(), "signing key loaded") {
		t.Errorf("restart did not report loading the key:\n%s", second.stderr)
	}
}

func TestServe_PlainHTTP(t *testing.T) {
	t.Setenv("FERRY_FEDERATION_LISTN", "127.0.0.1:1") // a typo is reported
	r := startServe(t, map[string]string{
		"FERRY_DATA_DIR":                     t.TempDir(),
		"FERRY_FEDERATION_LISTEN":            "127.0.0.1:0",
		"FERRY_FEDERATION_PLAIN_HTTP":        "true",
		"FERRY_FEDERATION_WELL_KNOWN_SERVER": "matrix.example.org:443",
	})
	url := r.inst.Federation().URL()
	if !strings.HasPrefix(url, "http://") {
		t.Fatalf("URL %q", url)
	}
	body := get(t, http.DefaultClient, url+"/.well-known/matrix/server")
	if string(body) != `{"m.server":"matrix.example.org:443"}` {
		t.Errorf("well-known: %s", body)
	}
	if !strings.Contains(r.stderr.String(), `"variable":"FERRY_FEDERATION_LISTN"`) {
		t.Errorf("misspelt variable not reported:\n%s", r.stderr)
	}
}

// TestServe_ConfigErrors runs the real command line: each bad file makes
// `ferry serve` exit non-zero naming the key at fault.
func TestServe_ConfigErrors(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string
	}{
		{"unknown key", "server_name = \"a.test\"\n[federation]\nlisten_address = \"127.0.0.1:1\"\n", []string{"federation.listen_address: unknown key"}},
		{"bad port", "[federation]\nlisten = \"127.0.0.1:99999\"\n", []string{"federation.listen", `port "99999" is not a number from 0 to 65535`}},
		{"invalid server name", "server_name = \"my_server!\"\n", []string{"server_name", "may only contain letters, digits, '.' and '-'"}},
		{"syntax", "server_name = \n", []string{"line 1"}},
		{"several", "server_name = \"a b\"\n[log]\nlevel = \"loud\"\n", []string{"server_name", "log.level"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ferry.toml")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := runMain([]string{"serve", "-config", path}, nil, &stdout, &stderr)
			if code == 0 {
				t.Fatal("ferry serve accepted the configuration")
			}
			for _, want := range tt.want {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}

func TestServe_RefusesCorruptKey(t *testing.T) {
	dataDir := t.TempDir()
	keyFile := filepath.Join(dataDir, keys.SigningKeyFile)
	if err := os.WriteFile(keyFile, []byte("ed25519 a_abcd not-a-seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := serve(context.Background(), []string{"-config", os.DevNull}, envMap(map[string]string{
		"FERRY_DATA_DIR":          dataDir,
		"FERRY_FEDERATION_LISTEN": "127.0.0.1:0",
		"FERRY_LOG_FORMAT":        "json",
	}), &stderr, nil)
	if code == 0 {
		t.Fatal("started with a corrupt key file")
	}
	if !strings.Contains(stderr.String(), keyFile) || !strings.Contains(stderr.String(), "corrupt key file") {
		t.Errorf("message does not name the file and problem:\n%s", stderr.String())
	}
}

func TestServe_BindError(t *testing.T) {
	r := startServe(t, map[string]string{"FERRY_DATA_DIR": t.TempDir(), "FERRY_FEDERATION_LISTEN": "127.0.0.1:0"})
	var stderr bytes.Buffer
	code := serve(context.Background(), []string{"-config", os.DevNull}, envMap(map[string]string{
		"FERRY_DATA_DIR":          t.TempDir(),
		"FERRY_FEDERATION_LISTEN": r.inst.Federation().ListenAddr().String(),
	}), &stderr, nil)
	if code == 0 || !strings.Contains(stderr.String(), "federation listener") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr.String())
	}
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(config.Log{Level: "warn", Format: "json"}, &buf)
	log.Info().Msg("hidden")
	log.Warn().Str("k", "v").Msg("shown")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("json format wrote %q: %v", buf.String(), err)
	}
	if m["message"] != "shown" || m["k"] != "v" || m["level"] != "warn" || m["time"] == nil {
		t.Errorf("log line %v", m)
	}

	buf.Reset()
	// auto on something that is not a terminal means JSON.
	auto := newLogger(config.Log{Level: "info", Format: "auto"}, &buf)
	auto.Info().Msg("x")
	if !json.Valid(buf.Bytes()) {
		t.Errorf("auto format on a buffer wrote %q", buf.String())
	}

	buf.Reset()
	console := newLogger(config.Log{Level: "info", Format: "console"}, &buf)
	console.Info().Msg("hello console")
	if json.Valid(buf.Bytes()) || !strings.Contains(buf.String(), "hello console") || strings.Contains(buf.String(), "\x1b[") {
		t.Errorf("console format wrote %q", buf.String())
	}
}
