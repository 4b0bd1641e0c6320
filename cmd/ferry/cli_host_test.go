package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/hostapi"
	"github.com/ferry-matrix/ferry/hostapi/client"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
	"github.com/ferry-matrix/ferry/store"
)

const cliServerName = "hs.test"

// cliTestKeys verifies signatures with roomstest's deterministic keys.
type cliTestKeys struct{}

func (cliTestKeys) KeyLookup(context.Context) rooms.KeyLookup { return roomstest.Keys{} }

// startHostAPI runs a real host plane (store in dataDir, engine, host,
// host API on 127.0.0.1) with the token `ferry serve` would use: the one
// in dataDir/host_token, created if missing. It returns the address.
func startHostAPI(t *testing.T, dataDir string) string {
	t.Helper()
	return startHostAPIOn(t, dataDir, "127.0.0.1:0")
}

// startHostAPIOn is startHostAPI listening at listen.
func startHostAPIOn(t *testing.T, dataDir, listen string) string {
	t.Helper()
	token, _, err := hostapi.LoadOrCreateToken(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), filepath.Join(dataDir, "ferry.db"), store.Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	logger := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	engine := &homeserver.Engine{ServerName: cliServerName, Signer: roomstest.Key(cliServerName), Store: db, Keys: cliTestKeys{}, Logger: logger}
	srv, err := hostapi.New(hostapi.Config{Host: &homeserver.Host{Engine: engine}, Cursors: db, Token: token, ServerName: cliServerName, Logger: logger})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	if err := srv.Open(listen); err != nil {
		db.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close host API: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	if strings.HasPrefix(listen, "unix:") {
		return listen
	}
	return srv.Addr().String()
}

// cliSession runs CLI verbs against one server, checking exit statuses.
type cliSession struct {
	t   *testing.T
	env map[string]string
}

// ok runs a verb that must succeed and returns its stdout.
func (s cliSession) ok(args ...string) string {
	s.t.Helper()
	status, stdout, stderr := runCLI(s.t, s.env, args...)
	if status != 0 {
		s.t.Fatalf("ferry %s: status %d, stderr %q", strings.Join(args, " "), status, stderr)
	}
	return stdout
}

// fails runs a verb that must exit 1 and returns its stderr.
func (s cliSession) fails(args ...string) string {
	s.t.Helper()
	status, _, stderr := runCLI(s.t, s.env, args...)
	if status != 1 {
		s.t.Fatalf("ferry %s: status %d, stderr %q; want 1", strings.Join(args, " "), status, stderr)
	}
	return stderr
}

// jsonLines decodes every line of out as one JSON object.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var values []map[string]any
	for line := range strings.Lines(out) {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", line, err)
		}
		values = append(values, v)
	}
	return values
}

// TestCLI_AgainstServer drives a whole session through the CLI verbs
// against a real host API, with the token found in the data directory as
// `ferry serve` leaves it.
func TestCLI_AgainstServer(t *testing.T) {
	dataDir := t.TempDir()
	address := startHostAPI(t, dataDir)
	s := cliSession{t: t, env: map[string]string{
		"FERRY_HOST_LISTEN": address,
		"FERRY_DATA_DIR":    dataDir,
		"FERRY_SERVER_NAME": cliServerName,
	}}

	// Users; bare localparts are completed with server_name.
	if out := s.ok("users", "add", "alice", "--displayname", "Alice"); out != "@alice:hs.test\n" {
		t.Errorf("users add: %q", out)
	}
	if v := jsonLines(t, s.ok("users", "add", "--json", "@bob:hs.test")); len(v) != 1 || v[0]["user_id"] != "@bob:hs.test" {
		t.Errorf("users add --json: %v", v)
	}
	s.ok("users", "add", "carol")
	if out := s.ok("users", "list"); !strings.Contains(out, "@alice:hs.test") || !strings.Contains(out, "Alice") || !strings.Contains(out, "@carol:hs.test") {
		t.Errorf("users list:\n%s", out)
	}
	if v := jsonLines(t, s.ok("users", "list", "--json")); len(v) != 1 || len(v[0]["users"].([]any)) != 3 {
		t.Errorf("users list --json: %v", v)
	}

	// Rooms.
	roomID := strings.TrimSpace(s.ok("rooms", "create", "--creator", "alice", "--name", "Lobby", "--topic", "all welcome",
		"--alias", "lobby", "--preset", "public_chat", "--version", "12", "--invite", "carol"))
	if !strings.HasPrefix(roomID, "!") || strings.Contains(roomID, "\n") {
		t.Fatalf("rooms create printed %q", roomID)
	}
	if out := s.ok("rooms", "join", "#lobby:hs.test", "--as", "bob"); out != roomID+"\n" {
		t.Errorf("rooms join by alias: %q, want %s", out, roomID)
	}
	if out := s.ok("rooms", "list"); !strings.Contains(out, roomID) || !strings.Contains(out, "#lobby:hs.test Lobby") {
		t.Errorf("rooms list:\n%s", out)
	}
	if v := jsonLines(t, s.ok("rooms", "list", "--json")); len(v) != 1 || len(v[0]["rooms"].([]any)) != 1 {
		t.Errorf("rooms list --json: %v", v)
	}
	if out := s.ok("rooms", "state", "#lobby:hs.test"); !strings.Contains(out, "name: Lobby") || !strings.Contains(out, "topic: all welcome") ||
		!strings.Contains(out, "invite @carol:hs.test") || !strings.Contains(out, "join @bob:hs.test") {
		t.Errorf("rooms state:\n%s", out)
	}
	if v := jsonLines(t, s.ok("rooms", "state", roomID, "--json")); len(v) != 1 || len(v[0]["state"].([]any)) < 6 {
		t.Errorf("rooms state --json: %v", v)
	}

	// Sending: flags may come anywhere; "--" keeps a text that looks like a flag.
	first := strings.TrimSpace(s.ok("send", roomID, "hello", "--as", "alice", "world"))
	if !strings.HasPrefix(first, "$") {
		t.Errorf("send printed %q", first)
	}
	if v := jsonLines(t, s.ok("send", "--json", "#lobby:hs.test", "--as", "bob", "--", "-1", "from", "bob")); len(v) != 1 || !strings.HasPrefix(v[0]["event_id"].(string), "$") {
		t.Errorf("send --json: %v", v)
	}
	// A chosen transaction ID makes a retry harmless.
	retry1 := s.ok("send", roomID, "--as", "alice", "--txn-id", "order-1", "once")
	if retry2 := s.ok("send", roomID, "--as", "alice", "--txn-id", "order-1", "once"); retry1 != retry2 {
		t.Errorf("the same --txn-id gave %q then %q", retry1, retry2)
	}

	status, out, stderr := runCLI(t, s.env, "rooms", "messages", roomID, "--limit", "3")
	if status != 0 || !strings.Contains(out, "@alice:hs.test m.room.message hello world") || !strings.Contains(out, "@bob:hs.test m.room.message -1 from bob") ||
		!strings.Contains(stderr, "ferry rooms messages "+roomID+" --from ") {
		t.Errorf("rooms messages: %d\n%s\nstderr %q", status, out, stderr)
	}
	// Oldest first: alice's message is printed before bob's.
	if strings.Index(out, "hello world") > strings.Index(out, "from bob") {
		t.Errorf("rooms messages not oldest first:\n%s", out)
	}
	if v := jsonLines(t, s.ok("rooms", "messages", roomID, "--json", "--limit", "2")); len(v) != 1 || len(v[0]["chunk"].([]any)) != 2 || v[0]["end"] == "" {
		t.Errorf("rooms messages --json: %v", v)
	}

	// Membership.
	if out := s.ok("rooms", "invite", roomID, "@dave:hs.test", "--as", "alice"); !strings.HasPrefix(out, "$") {
		t.Errorf("rooms invite: %q", out)
	}
	if out := s.ok("rooms", "leave", roomID, "--as", "carol", "--reason", "not now"); !strings.HasPrefix(out, "$") {
		t.Errorf("rooms leave: %q", out)
	}

	for _, verb := range []string{"kick", "ban", "unban"} {
		if out := s.ok("rooms", verb, roomID, "bob", "--as", "alice", "--reason", "testing "+verb); !strings.HasPrefix(out, "$") {
			t.Errorf("rooms %s: %q", verb, out)
		}
	}
	if stderr := s.fails("rooms", "kick", roomID, "alice", "--as", "bob"); !strings.HasPrefix(stderr, "ferry: M_FORBIDDEN: ") {
		t.Errorf("kick by a user not in the room: %q", stderr)
	}
	s.ok("rooms", "join", roomID, "--as", "bob")

	// The event stream, one line per item.
	events := s.ok("events")
	if !strings.Contains(events, " event "+roomID+" @alice:hs.test m.room.message hello world\n") ||
		!strings.Contains(events, " event "+roomID+" @alice:hs.test m.room.member invite @carol:hs.test") ||
		!strings.Contains(events, " event "+roomID+" @alice:hs.test m.room.power_levels power levels: ") ||
		!strings.Contains(events, "m.room.member leave @carol:hs.test: not now") ||
		!strings.Contains(events, "@alice:hs.test m.room.member ban @bob:hs.test: testing ban") {
		t.Errorf("events:\n%s", events)
	}
	items := jsonLines(t, s.ok("events", "--json"))
	if len(items) != strings.Count(events, "\n") {
		t.Errorf("events --json gave %d items, events %d lines", len(items), strings.Count(events, "\n"))
	}
	for _, it := range items {
		if it["pos"] == "" || it["kind"] == "" {
			t.Errorf("events --json item without pos or kind: %v", it)
		}
	}
	since := items[2]["pos"].(string)
	if v := jsonLines(t, s.ok("events", "--since", since, "--limit", "2", "--json")); len(v) != 2 || v[0]["pos"] != items[3]["pos"] {
		t.Errorf("events --since %s --limit 2: %v", since, v)
	}

	// Destinations of a server alone.
	if status, out, stderr := runCLI(t, s.env, "destinations"); status != 0 || out != "" || !strings.Contains(stderr, "no remote servers") {
		t.Errorf("destinations: %d %q %q", status, out, stderr)
	}
	if out := s.ok("destinations", "--json"); out != "{\"destinations\":[]}\n" {
		t.Errorf("destinations --json: %q", out)
	}

	// Refusals print the Matrix error and exit 1.
	if stderr := s.fails("send", "!unknown:hs.test", "--as", "alice", "hi"); !strings.HasPrefix(stderr, "ferry: M_NOT_FOUND: ") {
		t.Errorf("send to an unknown room: %q", stderr)
	}
	if stderr := s.fails("send", roomID, "--as", "carol", "hi"); !strings.HasPrefix(stderr, "ferry: M_FORBIDDEN: ") {
		t.Errorf("send by a user who left: %q", stderr)
	}
	if stderr := s.fails("rooms", "create", "--creator", "alice", "--version", "99"); !strings.HasPrefix(stderr, "ferry: M_UNSUPPORTED_ROOM_VERSION: ") {
		t.Errorf("rooms create --version 99: %q", stderr)
	}
	if stderr := s.fails("rooms", "state", "#nowhere:hs.test"); !strings.HasPrefix(stderr, "ferry: M_NOT_FOUND: ") {
		t.Errorf("rooms state of an unknown alias: %q", stderr)
	}
	wrongToken := cliSession{t: t, env: map[string]string{"FERRY_HOST_LISTEN": address, "FERRY_DATA_DIR": dataDir, "FERRY_HOST_TOKEN": "wrong"}}
	if stderr := wrongToken.fails("users", "list"); !strings.HasPrefix(stderr, "ferry: M_UNKNOWN_TOKEN: ") {
		t.Errorf("wrong token: %q", stderr)
	}

	// A room whose initial invites failed is still printed, with status 1.
	status, out, stderr = runCLI(t, s.env, "rooms", "create", "--creator", "alice", "--invite", "@zed:unreachable.invalid")
	if status != 1 || !strings.HasPrefix(out, "!") || !strings.Contains(stderr, "inviting @zed:unreachable.invalid failed") {
		t.Errorf("rooms create with a failed invite: %d %q %q", status, out, stderr)
	}

	if out := s.ok("users", "remove", "bob"); out != "" {
		t.Errorf("users remove printed %q", out)
	}
	if stderr := s.fails("users", "remove", "bob"); !strings.HasPrefix(stderr, "ferry: M_NOT_FOUND: ") {
		t.Errorf("users remove twice: %q", stderr)
	}
}

// followOutput is a bytes.Buffer one goroutine writes while another reads.
type followOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *followOutput) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *followOutput) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestCLI_EventsFollow runs `ferry events --follow` until interrupted and
// sees a message sent while it runs.
func TestCLI_EventsFollow(t *testing.T) {
	dataDir := t.TempDir()
	address := startHostAPI(t, dataDir)
	env := map[string]string{"FERRY_HOST_LISTEN": address, "FERRY_DATA_DIR": dataDir, "FERRY_SERVER_NAME": cliServerName}
	s := cliSession{t: t, env: env}
	s.ok("users", "add", "alice")
	roomID := strings.TrimSpace(s.ok("rooms", "create", "--creator", "alice"))

	for _, asJSON := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		var stdout, stderr followOutput
		args := []string{"events", "--follow"}
		if asJSON {
			args = append(args, "--json")
		}
		done := make(chan int, 1)
		go func() { done <- runHostCLI(ctx, args, envOf(env), &stdout, &stderr) }()

		text := "followed " + map[bool]string{false: "text", true: "json"}[asJSON]
		s.ok("send", roomID, "--as", "alice", text)
		deadline := time.Now().Add(time.Minute) // a safety net, not a measurement
		for !strings.Contains(stdout.String(), text) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if status := <-done; status != 0 {
			t.Errorf("events --follow (json %v) exited %d, stderr %q", asJSON, status, stderr.String())
		}
		out := stdout.String()
		if !strings.Contains(out, text) {
			t.Fatalf("events --follow (json %v) never printed the message:\n%s", asJSON, out)
		}
		if asJSON {
			lines := jsonLines(t, out)
			last := lines[len(lines)-1]
			var item client.Item
			encoded, _ := json.Marshal(last)
			if err := json.Unmarshal(encoded, &item); err != nil || item.Kind != "event" || item.RoomID != roomID {
				t.Errorf("last --json line %v", last)
			}
		} else if !strings.Contains(out, " event "+roomID+" @alice:hs.test m.room.message "+text+"\n") {
			t.Errorf("events --follow:\n%s", out)
		}
	}
}

// TestCLI_ConfigFileAndUnixSocket finds everything through -config: the
// data directory with the token file and a host API on a unix socket.
func TestCLI_ConfigFileAndUnixSocket(t *testing.T) {
	dir := t.TempDir()
	listen := "unix:" + filepath.Join(dir, "host.sock")
	startHostAPIOn(t, dir, listen)
	path := filepath.Join(dir, "ferry.toml")
	conf := fmt.Sprintf("server_name = %q\ndata_dir = %q\n[host]\nlisten = %q\n", cliServerName, dir, listen)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s := cliSession{t: t, env: nil}
	if out := s.ok("users", "add", "-config", path, "alice"); out != "@alice:hs.test\n" {
		t.Errorf("users add: %q", out)
	}
	roomID := strings.TrimSpace(s.ok("rooms", "create", "--creator", "alice", "-config", path, "--name", "over a socket"))
	s.ok("send", roomID, "--as", "alice", "-config", path, "hello socket")
	if out := s.ok("events", "-config", path); !strings.Contains(out, "m.room.message hello socket") || !strings.Contains(out, "name: over a socket") {
		t.Errorf("events:\n%s", out)
	}
}
