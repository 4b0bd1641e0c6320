package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/hostapi/client"
)

// envOf is a LookupEnv over a fixed map, so tests never touch the
// process environment.
func envOf(vars map[string]string) config.LookupEnv {
	return func(key string) (string, bool) {
		v, ok := vars[key]
		return v, ok
	}
}

// runCLI runs `ferry ARGS...` for the host verbs with env and returns the
// exit status and both outputs.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	status := runHostCLI(context.Background(), args, envOf(env), &stdout, &stderr)
	return status, stdout.String(), stderr.String()
}

func TestSplitFlags(t *testing.T) {
	set := flag.NewFlagSet("t", flag.ContinueOnError)
	set.String("as", "", "")
	set.Bool("json", false, "")
	var via stringList
	set.Var(&via, "via", "")
	for _, tc := range []struct {
		args              []string
		flags, positional []string
	}{
		{[]string{"!r:s", "--as", "alice", "hello", "world"}, []string{"--as", "alice"}, []string{"!r:s", "hello", "world"}},
		{[]string{"--json", "!r:s", "--as=alice", "hi"}, []string{"--json", "--as=alice"}, []string{"!r:s", "hi"}},
		{[]string{"!r", "--via", "a.test", "-via", "b.test", "--json"}, []string{"--via", "a.test", "-via", "b.test", "--json"}, []string{"!r"}},
		{[]string{"!r", "--as", "a", "--", "-1", "--json"}, []string{"--as", "a"}, []string{"!r", "-1", "--json"}},
		{[]string{"-", "--unknown", "x"}, []string{"--unknown"}, []string{"-", "x"}},
		{[]string{"!r", "--as"}, []string{"--as"}, []string{"!r"}},
	} {
		flags, positional := splitFlags(set, tc.args)
		if !reflect.DeepEqual(flags, tc.flags) || !reflect.DeepEqual(positional, tc.positional) {
			t.Errorf("splitFlags(%q) = %q, %q; want %q, %q", tc.args, flags, positional, tc.flags, tc.positional)
		}
	}
}

func TestHostAddress(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:8009":      "127.0.0.1:8009",
		"0.0.0.0:8009":        "127.0.0.1:8009",
		":8009":               "127.0.0.1:8009",
		"[::]:8009":           "[::1]:8009",
		"[::1]:9000":          "[::1]:9000",
		"localhost:8009":      "localhost:8009",
		"unix:/run/host.sock": "unix:/run/host.sock",
	} {
		cfg := config.Default()
		cfg.Host.Listen = listen
		if got := hostAddress(cfg); got != want {
			t.Errorf("hostAddress(%q) = %q, want %q", listen, got, want)
		}
	}
}

func TestHostToken(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = dir

	_, err := hostToken(cfg)
	if err == nil || !strings.Contains(err.Error(), "FERRY_HOST_TOKEN") || !strings.Contains(err.Error(), filepath.Join(dir, "host_token")) {
		t.Errorf("no token anywhere: %v; want a hint naming FERRY_HOST_TOKEN and the file", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "host_token")); !os.IsNotExist(err) {
		t.Errorf("the CLI created the token file (stat: %v)", err)
	}

	if err := os.WriteFile(filepath.Join(dir, "host_token"), []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := hostToken(cfg); err != nil || got != "from-file" {
		t.Errorf("token file: %q, %v", got, err)
	}
	cfg.Host.Token = "from-config"
	if got, err := hostToken(cfg); err != nil || got != "from-config" {
		t.Errorf("host.token over the file: %q, %v", got, err)
	}

	if err := os.WriteFile(filepath.Join(dir, "host_token"), []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Host.Token = ""
	if _, err := hostToken(cfg); err == nil {
		t.Error("an empty token file was accepted")
	}
}

// TestHostToken_FromEnvironmentAndConfigFile checks the whole discovery as
// the verbs do it: the -config file, then FERRY_HOST_TOKEN over it.
func TestHostToken_FromEnvironmentAndConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.toml")
	conf := "data_dir = " + strconvQuote(dir) + "\n[host]\nlisten = \"127.0.0.1:9999\"\ntoken = \"file-token\"\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadCLIConfig(path, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if token, _ := hostToken(cfg); token != "file-token" || hostAddress(cfg) != "127.0.0.1:9999" {
		t.Errorf("from file: token %q, address %q", token, hostAddress(cfg))
	}
	cfg, err = loadCLIConfig(path, envOf(map[string]string{"FERRY_HOST_TOKEN": "env-token", "FERRY_HOST_LISTEN": "unix:/x.sock"}))
	if err != nil {
		t.Fatal(err)
	}
	if token, _ := hostToken(cfg); token != "env-token" || hostAddress(cfg) != "unix:/x.sock" {
		t.Errorf("from env: token %q, address %q", token, hostAddress(cfg))
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestCLI_UsageErrors(t *testing.T) {
	// No server and no token: usage mistakes are found before either matters.
	env := map[string]string{"FERRY_DATA_DIR": t.TempDir()}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rooms"}, "usage: ferry rooms <command>"},
		{[]string{"rooms", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"users", "add"}, "usage: ferry users add USER"},
		{[]string{"users", "add", "a", "b"}, "usage: ferry users add USER"},
		{[]string{"users", "list", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"rooms", "create"}, "--creator is required"},
		{[]string{"rooms", "create", "--creator", "a", "--preset", "open"}, "--preset must be public_chat or private_chat"},
		{[]string{"rooms", "join", "!r:s"}, "--as is required"},
		{[]string{"rooms", "invite", "!r:s", "--as", "a"}, "usage: ferry rooms invite ROOM USER --as SENDER"},
		{[]string{"rooms", "messages", "!r:s", "--limit", "0"}, "--limit must be between 1 and 1000"},
		{[]string{"send", "!r:s", "hello"}, "--as is required"},
		{[]string{"send", "!r:s", "--as", "a"}, "usage: ferry send ROOM --as USER"},
		{[]string{"send", "!r:s", "--as", "a", " "}, "the message text is empty"},
		{[]string{"events", "extra"}, "usage: ferry events"},
		{[]string{"events", "--limit", "-1"}, "--limit must not be negative"},
		{[]string{"destinations", "x"}, "usage: ferry destinations"},
	} {
		status, stdout, stderr := runCLI(t, env, tc.args...)
		if status != 2 || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("ferry %s: status %d, stdout %q, stderr %q; want 2 and %q", strings.Join(tc.args, " "), status, stdout, stderr, tc.want)
		}
	}
	// Help is not a mistake.
	if status, _, stderr := runCLI(t, env, "rooms", "create", "-h"); status != 0 || !strings.Contains(stderr, "-creator") {
		t.Errorf("rooms create -h: status %d, stderr %q", status, stderr)
	}
}

func TestCLI_ServerNotRunning(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	missingSocket := "unix:" + filepath.Join(t.TempDir(), "host.sock")

	for _, listen := range []string{closed, missingSocket} {
		env := map[string]string{"FERRY_HOST_LISTEN": listen, "FERRY_HOST_TOKEN": "t", "FERRY_DATA_DIR": t.TempDir()}
		for _, args := range [][]string{{"users", "list"}, {"rooms", "create", "--creator", "alice"}, {"events", "--follow"}, {"destinations", "--json"}} {
			status, stdout, stderr := runCLI(t, env, args...)
			want := "ferry: cannot reach the host API at " + listen + ": is `ferry serve` running?"
			if status != 1 || stdout != "" || !strings.HasPrefix(stderr, want) {
				t.Errorf("ferry %s against %s: status %d, stdout %q, stderr %q; want 1 and %q", strings.Join(args, " "), listen, status, stdout, stderr, want)
			}
		}
	}
}

// TestCLI_NoToken runs a verb with no token configured and none in the
// data directory against a running server: the server's refusal is
// explained, the file is not created, and usage mistakes still come first.
func TestCLI_NoToken(t *testing.T) {
	address := startHostAPI(t, t.TempDir())
	dir := t.TempDir()
	env := map[string]string{"FERRY_HOST_LISTEN": address, "FERRY_DATA_DIR": dir}
	status, _, stderr := runCLI(t, env, "users", "list")
	if status != 1 || !strings.HasPrefix(stderr, "ferry: no host API token: ") || !strings.Contains(stderr, "FERRY_HOST_TOKEN") {
		t.Errorf("status %d, stderr %q", status, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "host_token")); !os.IsNotExist(err) {
		t.Errorf("the CLI created the token file (stat: %v)", err)
	}
	if status, _, stderr := runCLI(t, env, "rooms", "create"); status != 2 || !strings.Contains(stderr, "--creator is required") {
		t.Errorf("usage mistake without a token: status %d, stderr %q", status, stderr)
	}
}

func TestCLI_InvalidConfiguration(t *testing.T) {
	status, _, stderr := runCLI(t, map[string]string{"FERRY_HOST_LISTEN": "nonsense"}, "users", "list")
	if status != 1 || !strings.Contains(stderr, "invalid configuration") || !strings.Contains(stderr, "host.listen") {
		t.Errorf("status %d, stderr %q", status, stderr)
	}
}

func TestSummarizeEvent(t *testing.T) {
	for _, tc := range []struct {
		event string
		want  string
	}{
		{`{"type":"m.room.message","sender":"@a:s","content":{"msgtype":"m.text","body":"hi\nthere\u0007"}}`, "hi⏎there"},
		{`{"type":"m.room.message","content":{"msgtype":"m.notice","body":"beep"}}`, "m.notice: beep"},
		{`{"type":"m.room.member","state_key":"@b:s","content":{"membership":"join","displayname":"Bob"}}`, "join @b:s (Bob)"},
		{`{"type":"m.room.member","state_key":"@b:s","content":{"membership":"leave","reason":"bye"}}`, "leave @b:s: bye"},
		{`{"type":"m.room.create","state_key":"","content":{"room_version":"12"}}`, "room version 12"},
		{`{"type":"m.room.name","state_key":"","content":{"name":"Lobby"}}`, "name: Lobby"},
		{`{"type":"m.room.redaction","content":{"redacts":"$x"}}`, "redacts $x"},
		{`{"type":"m.room.redaction","redacts":"$y","content":{}}`, "redacts $y"},
		{`{"type":"m.room.power_levels","state_key":"","content":{"users":{"@b:s":50,"@a:s":100},"ban":50}}`, "power levels: @a:s=100 @b:s=50"},
		{`{"type":"m.room.power_levels","state_key":"","content":{"ban":50}}`, "power levels: no users listed"},
		{`{"type":"org.example.thing","content":{"b":1,"a":"x"}}`, `{"a":"x","b":1}`},
		{`{"type":"org.example.empty","state_key":"k","content":{}}`, "(empty) k"},
		{`{"type":"org.example.nocontent"}`, "(empty)"},
	} {
		ev, ok := parseEventView(json.RawMessage(tc.event))
		if !ok {
			t.Errorf("%s does not parse", tc.event)
			continue
		}
		if got := summarizeEvent(ev); got != tc.want {
			t.Errorf("summarizeEvent(%s) = %q, want %q", tc.event, got, tc.want)
		}
	}
}

func TestItemLine(t *testing.T) {
	for _, tc := range []struct {
		item client.Item
		want string
	}{
		{client.Item{Pos: "7", Kind: "event", RoomID: "!r:s", Event: json.RawMessage(`{"event_id":"$e","type":"m.room.message","sender":"@a:s","content":{"msgtype":"m.text","body":"hello"}}`)},
			"7 event !r:s @a:s m.room.message hello"},
		{client.Item{Pos: "8", Kind: "invite", RoomID: "!r:s", Event: json.RawMessage(`{"type":"m.room.member","sender":"@a:s","state_key":"@b:t","content":{"membership":"invite"}}`)},
			"8 invite !r:s @a:s m.room.member invite @b:t"},
		{client.Item{Pos: "9", Kind: "edu", RoomID: "!r:s", EDU: json.RawMessage(`{"type":"m.typing","content":{"room_id":"!r:s","user_id":"@c:t","typing":true}}`)},
			"9 edu !r:s @c:t m.typing typing"},
		{client.Item{Pos: "10", Kind: "edu", RoomID: "!r:s", EDU: json.RawMessage(`{"type":"m.receipt","content":{"!r:s":{"m.read":{"@c:t":{"data":{"ts":1},"event_ids":["$e"]}}}}}`)},
			"10 edu !r:s @c:t m.receipt @c:t m.read $e"},
		{client.Item{Pos: "11", Kind: "edu", EDU: json.RawMessage(`{"type":"m.presence","content":{"push":[]}}`)},
			`11 edu - - m.presence {"push":[]}`},
		{client.Item{Pos: "12", Kind: "event", RoomID: "!r:s", Event: json.RawMessage(`"odd"`)},
			`12 event !r:s - - "odd"`},
	} {
		if got := itemLine(tc.item); got != tc.want {
			t.Errorf("itemLine(%+v) = %q, want %q", tc.item, got, tc.want)
		}
	}
}

func TestDestinationStatus(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		d    client.Destination
		want string
	}{
		{client.Destination{}, "ok"},
		{client.Destination{Active: true}, "sending"},
		{client.Destination{Failures: 2}, "failing (2 failures)"},
		{client.Destination{Failures: 3, BackoffUntilTS: now.Add(90 * time.Second).UnixMilli()}, "backing off (3 failures, retry in 1m30s)"},
	} {
		if got := destinationStatus(tc.d, now); got != tc.want {
			t.Errorf("destinationStatus(%+v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	if got := ago(time.Time{}, now); got != "never" {
		t.Errorf("ago(zero) = %q", got)
	}
	if got := ago(now.Add(-5*time.Second), now); got != "5s ago" {
		t.Errorf("ago(-5s) = %q", got)
	}
}

func TestHostCall_Completion(t *testing.T) {
	cfg := config.Default()
	cfg.ServerName = "example.org"
	call := &hostCall{cfg: cfg}
	for in, want := range map[string]string{"alice": "@alice:example.org", "@bob:b.test": "@bob:b.test", "": ""} {
		if got := call.userID(in); got != want {
			t.Errorf("userID(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"lobby": "#lobby:example.org", "#x:y.test": "#x:y.test", "": ""} {
		if got := call.alias(in); got != want {
			t.Errorf("alias(%q) = %q, want %q", in, got, want)
		}
	}
}
