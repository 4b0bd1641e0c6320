package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
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

const (
	ourName   = "hs.test"
	testToken = "client-test-token"
	alice     = "@alice:hs.test"
	bob       = "@bob:hs.test"
	carol     = "@carol:hs.test"
)

// testKeys verifies signatures with roomstest's deterministic keys.
type testKeys struct{}

func (testKeys) KeyLookup(context.Context) rooms.KeyLookup { return roomstest.Keys{} }

// server is a real Ferry host plane: store, engine, host and host API.
type server struct {
	db  *store.DB
	srv *hostapi.Server
}

// startServer opens a server on dir listening at listen ("127.0.0.1:0"
// or "unix:/path"); t.Cleanup stops it unless stop ran first.
func startServer(t *testing.T, dir, listen string) *server {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(dir, "ferry.db"), store.Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	logger := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	engine := &homeserver.Engine{ServerName: ourName, Signer: roomstest.Key(ourName), Store: db, Keys: testKeys{}, Logger: logger}
	srv, err := hostapi.New(hostapi.Config{Host: &homeserver.Host{Engine: engine}, Cursors: db, Token: testToken, ServerName: ourName, Logger: logger})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	if err := srv.Open(listen); err != nil {
		db.Close()
		t.Fatal(err)
	}
	s := &server{db: db, srv: srv}
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop closes the server, then its store; a second call does nothing.
func (s *server) stop(t *testing.T) {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.srv.Close(ctx); err != nil {
		t.Errorf("close server: %v", err)
	}
	if err := s.db.Close(); err != nil {
		t.Errorf("close store: %v", err)
	}
	s.srv = nil
}

func newClient(t *testing.T, address string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(address, testToken, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantCode fails unless err is an *client.Error with status and code.
func wantCode(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != status || apiErr.Code != code || apiErr.Message == "" {
		t.Errorf("%s: %v (%#v), want %d %s with a message", what, err, apiErr, status, code)
	}
}

// eventField reads one top-level string field of an event.
func eventField(t *testing.T, raw json.RawMessage, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("event %s: %v", raw, err)
	}
	s, _ := m[name].(string)
	return s
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// TestClient_Routes drives every route through the client against a real
// server and checks the answers and the typed errors.
func TestClient_Routes(t *testing.T) {
	s := startServer(t, t.TempDir(), "127.0.0.1:0")
	c := newClient(t, s.srv.Addr().String())
	ctx := context.Background()

	// Users.
	got := must[client.User](t, "PutUser")(c.PutUser(ctx, alice, client.UserProfile{DisplayName: "Alice", AvatarURL: "mxc://hs.test/a"}))
	if got != (client.User{UserID: alice, DisplayName: "Alice", AvatarURL: "mxc://hs.test/a"}) {
		t.Errorf("PutUser = %+v", got)
	}
	for _, u := range []string{bob, carol} {
		must[client.User](t, "PutUser "+u)(c.PutUser(ctx, u, client.UserProfile{}))
	}
	if u := must[client.User](t, "User")(c.User(ctx, alice)); u.DisplayName != "Alice" {
		t.Errorf("User = %+v", u)
	}
	users := must[[]client.User](t, "Users")(c.Users(ctx))
	if len(users) != 3 {
		t.Errorf("Users = %+v", users)
	}
	_, err := c.User(ctx, "@nobody:hs.test")
	wantCode(t, "User of an unknown user", err, 404, "M_NOT_FOUND")

	// Rooms: the alias's '#' and the room ID's '!' must survive the path.
	created := must[client.CreateRoomResponse](t, "CreateRoom")(c.CreateRoom(ctx, client.CreateRoomRequest{
		Creator: alice, Preset: client.PresetPublicChat, Name: "Lobby", Topic: "hello", Alias: "#lobby:hs.test", Invite: []string{carol},
	}))
	roomID := created.RoomID
	if roomID == "" || len(created.FailedInvites) != 0 {
		t.Fatalf("CreateRoom = %+v", created)
	}
	target := must[client.AliasTarget](t, "Alias")(c.Alias(ctx, "#lobby:hs.test"))
	if target.RoomID != roomID {
		t.Errorf("Alias = %+v, want %s", target, roomID)
	}
	joined := must[client.JoinResponse](t, "JoinRoom")(c.JoinRoom(ctx, "#lobby:hs.test", client.JoinRequest{UserID: bob}))
	if joined.RoomID != roomID || joined.EventID == "" {
		t.Errorf("JoinRoom = %+v", joined)
	}
	summary := must[client.RoomSummary](t, "Room")(c.Room(ctx, roomID))
	if summary.Name != "Lobby" || summary.Topic != "hello" || summary.CanonicalAlias != "#lobby:hs.test" ||
		!slices.Equal(summary.JoinedLocalUsers, []string{alice, bob}) || summary.JoinedMembers != 2 || summary.RoomVersion == "" {
		t.Errorf("Room = %+v", summary)
	}
	if list := must[[]client.RoomSummary](t, "Rooms")(c.Rooms(ctx)); len(list) != 1 || list[0].RoomID != roomID {
		t.Errorf("Rooms = %+v", list)
	}

	// Sending: the same transaction ID gives the same event.
	send := client.SendRequest{Sender: alice, Type: "m.room.message", Content: map[string]any{"msgtype": "m.text", "body": "hi"}, TxnID: "t1"}
	first := must[string](t, "Send")(c.Send(ctx, roomID, send))
	if again := must[string](t, "Send again")(c.Send(ctx, roomID, send)); again != first {
		t.Errorf("Send with the same txn_id: %s then %s", first, again)
	}
	_, err = c.Send(ctx, roomID, client.SendRequest{Sender: carol, Type: "m.room.message", Content: map[string]any{"body": "x"}})
	wantCode(t, "Send by an invited user", err, 403, "M_FORBIDDEN")
	_, err = c.Send(ctx, "!unknown:hs.test", send)
	wantCode(t, "Send to an unknown room", err, 404, "M_NOT_FOUND")

	// State, with and without a state key.
	topicID := must[string](t, "SetState topic")(c.SetState(ctx, roomID, "m.room.topic", "", client.StateRequest{Sender: alice, Content: map[string]any{"topic": "new topic"}}))
	customID := must[string](t, "SetState custom")(c.SetState(ctx, roomID, "org.example.profile", "a/b?c#d e", client.StateRequest{Sender: alice, Content: map[string]any{"x": "y"}}))
	state := must[[]json.RawMessage](t, "State")(c.State(ctx, roomID))
	ids := map[string]bool{}
	for _, ev := range state {
		ids[eventField(t, ev, "event_id")] = true
		if eventField(t, ev, "event_id") == customID && eventField(t, ev, "state_key") != "a/b?c#d e" {
			t.Errorf("state key sent as %q", eventField(t, ev, "state_key"))
		}
	}
	if !ids[topicID] || !ids[customID] || !ids[joined.EventID] {
		t.Errorf("State lacks the topic %s, custom %s or join %s: %d events", topicID, customID, joined.EventID, len(state))
	}

	redaction := must[string](t, "Redact")(c.Redact(ctx, roomID, first, client.RedactRequest{Sender: alice, Reason: "oops"}))
	if err := c.Typing(ctx, roomID, client.TypingRequest{UserID: bob, Typing: true, TimeoutMS: 5000}); err != nil {
		t.Errorf("Typing: %v", err)
	}
	// Stopping also disarms the server's withdrawal timer, which would
	// otherwise fire after the test.
	if err := c.Typing(ctx, roomID, client.TypingRequest{UserID: bob, Typing: false}); err != nil {
		t.Errorf("Typing false: %v", err)
	}
	if err := c.Receipt(ctx, roomID, client.ReceiptRequest{UserID: bob, EventID: redaction}); err != nil {
		t.Errorf("Receipt: %v", err)
	}

	// Messages: newest first, paged with End.
	page := must[client.Messages](t, "Messages")(c.Messages(ctx, roomID, client.MessagesRequest{Limit: 2}))
	if len(page.Chunk) != 2 || eventField(t, page.Chunk[0], "event_id") != redaction || page.End == "" {
		t.Fatalf("Messages = %d events %s, end %q; want 2 starting with %s, and more", len(page.Chunk), page.Chunk, page.End, redaction)
	}
	older := must[client.Messages](t, "Messages from")(c.Messages(ctx, roomID, client.MessagesRequest{From: page.End, Limit: 1000}))
	forward := must[client.Messages](t, "Messages forward")(c.Messages(ctx, roomID, client.MessagesRequest{Forward: true, Limit: 1000}))
	if len(older.Chunk)+2 != len(forward.Chunk) || len(forward.Chunk) == 0 || eventField(t, forward.Chunk[0], "type") != "m.room.create" {
		t.Errorf("paging back gave %d+2 events, forward %d: %s", len(older.Chunk), len(forward.Chunk), forward.Chunk)
	}

	// Membership changes.
	if id := must[string](t, "Invite")(c.Invite(ctx, roomID, client.InviteRequest{Sender: alice, UserID: "@dave:hs.test"})); id == "" {
		t.Error("Invite gave no event ID")
	}
	must[string](t, "Leave")(c.Leave(ctx, roomID, client.LeaveRequest{UserID: carol, Reason: "not now"}))
	must[string](t, "Kick")(c.Kick(ctx, roomID, client.ModerationRequest{Sender: alice, UserID: bob, Reason: "test"}))
	must[string](t, "Ban")(c.Ban(ctx, roomID, client.ModerationRequest{Sender: alice, UserID: bob}))
	must[string](t, "Unban")(c.Unban(ctx, roomID, client.ModerationRequest{Sender: alice, UserID: bob}))
	_, err = c.Knock(ctx, roomID, client.KnockRequest{UserID: bob})
	wantCode(t, "Knock on a public room", err, 403, "M_FORBIDDEN")

	// Aliases.
	if err := c.PutAlias(ctx, "#second:hs.test", roomID); err != nil {
		t.Errorf("PutAlias: %v", err)
	}
	wantCode(t, "PutAlias taken", c.PutAlias(ctx, "#second:hs.test", roomID), 409, "M_ROOM_IN_USE")
	if err := c.DeleteAlias(ctx, "#second:hs.test"); err != nil {
		t.Errorf("DeleteAlias: %v", err)
	}
	_, err = c.Alias(ctx, "#second:hs.test")
	wantCode(t, "Alias deleted", err, 404, "M_NOT_FOUND")

	if dests := must[[]client.Destination](t, "Destinations")(c.Destinations(ctx)); len(dests) != 0 {
		t.Errorf("Destinations of a lone server = %+v", dests)
	}

	// The stream holds what happened, each item once, in order.
	events := must[client.EventsPage](t, "Events")(c.Events(ctx, "0", 0, 1000))
	var sawMessage bool
	for i, it := range events.Items {
		if i > 0 && mustInt(t, it.Pos) <= mustInt(t, events.Items[i-1].Pos) {
			t.Errorf("item %d at %s after %s", i, it.Pos, events.Items[i-1].Pos)
		}
		if it.Kind == client.KindEvent && eventField(t, it.Event, "event_id") == first {
			sawMessage = true
		}
	}
	if !sawMessage || events.Next != events.Items[len(events.Items)-1].Pos {
		t.Errorf("Events: message seen %v, next %s after %d items", sawMessage, events.Next, len(events.Items))
	}
	if rest := must[client.EventsPage](t, "Events at the end")(c.Events(ctx, events.Next, 0, 0)); len(rest.Items) != 0 || rest.Next != events.Next {
		t.Errorf("Events after the end = %+v", rest)
	}

	if err := c.DeleteUser(ctx, carol); err != nil {
		t.Errorf("DeleteUser: %v", err)
	}
	wantCode(t, "DeleteUser again", c.DeleteUser(ctx, carol), 404, "M_NOT_FOUND")

	// A wrong token is refused on every route.
	wrong, err := client.New(s.srv.Addr().String(), "wrong")
	if err != nil {
		t.Fatal(err)
	}
	_, err = wrong.Users(ctx)
	wantCode(t, "wrong token", err, 401, "M_UNKNOWN_TOKEN")
	noToken, err := client.New(s.srv.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = noToken.Rooms(ctx)
	wantCode(t, "no token", err, 401, "M_MISSING_TOKEN")
	if err := wrong.Follow(ctx, "0", func(client.Item) error { return nil }); client.ErrorCode(err) != "M_UNKNOWN_TOKEN" {
		t.Errorf("Follow with a wrong token = %v", err)
	}
}

func mustInt(t *testing.T, token string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(token, 10, 64)
	if err != nil {
		t.Fatalf("token %q: %v", token, err)
	}
	return n
}

// TestClient_EventsLongPoll checks that a long poll answers with the item
// that arrives while it waits.
func TestClient_EventsLongPoll(t *testing.T) {
	s := startServer(t, t.TempDir(), "127.0.0.1:0")
	c := newClient(t, s.srv.Addr().String())
	ctx := context.Background()
	must[client.User](t, "PutUser")(c.PutUser(ctx, alice, client.UserProfile{}))
	room := must[client.CreateRoomResponse](t, "CreateRoom")(c.CreateRoom(ctx, client.CreateRoomRequest{Creator: alice}))
	head := must[client.EventsPage](t, "Events")(c.Events(ctx, "0", 0, 1000))

	type result struct {
		page client.EventsPage
		err  error
	}
	done := make(chan result, 1)
	go func() {
		page, err := c.Events(ctx, head.Next, client.MaxEventsTimeout, 0)
		done <- result{page, err}
	}()
	sent := must[string](t, "Send")(c.Send(ctx, room.RoomID, client.SendRequest{Sender: alice, Type: "m.room.message", Content: map[string]any{"body": "wake up"}}))
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The poll may have started after the send; either way the message
	// is the first item after head.
	if len(r.page.Items) == 0 || eventField(t, r.page.Items[0].Event, "event_id") != sent {
		t.Errorf("long poll = %+v, want the message %s first", r.page, sent)
	}
}

// TestClient_FollowAcrossRestart follows the stream over a unix socket
// while the server stops and starts again on the same data directory:
// every item arrives once, in order, with nothing missing.
func TestClient_FollowAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	listen := "unix:" + filepath.Join(dir, "host.sock")
	s := startServer(t, dir, listen)
	var reconnects int
	c := newClient(t, listen, client.WithReconnectHook(func(error, time.Duration) { reconnects++ }))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	must[client.User](t, "PutUser")(c.PutUser(ctx, alice, client.UserProfile{}))
	room := must[client.CreateRoomResponse](t, "CreateRoom")(c.CreateRoom(ctx, client.CreateRoomRequest{Creator: alice})).RoomID

	items := make(chan client.Item, 1000)
	errStop := errors.New("enough")
	const messages = 20
	var seen int
	followed := make(chan error, 1)
	go func() {
		followed <- c.Follow(ctx, "0", func(it client.Item) error {
			items <- it
			if isMessage(it) {
				seen++
				if seen == messages {
					return errStop
				}
			}
			return nil
		})
	}()
	sendN := func(from, to int) {
		for i := from; i < to; i++ {
			must[string](t, "Send")(c.Send(ctx, room, client.SendRequest{Sender: alice, Type: "m.room.message", Content: map[string]any{"body": strconv.Itoa(i)}, TxnID: strconv.Itoa(i)}))
		}
	}
	sendN(0, messages/2)
	// Wait until the follower has the first half, so the restart breaks
	// a stream that is really open.
	var got []client.Item
	for countMessages(got) < messages/2 {
		got = append(got, <-items)
	}
	s.stop(t)
	startServer(t, dir, listen)
	sendN(messages/2, messages)

	if err := <-followed; !errors.Is(err, errStop) {
		t.Fatalf("Follow = %v, want the handler's error", err)
	}
	close(items)
	for it := range items {
		got = append(got, it)
	}
	if reconnects == 0 {
		t.Error("the stream was never reopened")
	}
	all := must[client.EventsPage](t, "Events")(c.Events(ctx, "0", 0, 1000))
	var want []string
	for _, it := range all.Items {
		want = append(want, it.Pos)
	}
	var positions []string
	for _, it := range got {
		positions = append(positions, it.Pos)
	}
	if !slices.Equal(positions, want[:len(positions)]) || countMessages(got) != messages {
		t.Errorf("followed positions %v, want a prefix of %v with %d messages", positions, want, messages)
	}
}

func countMessages(items []client.Item) int {
	n := 0
	for _, it := range items {
		if isMessage(it) {
			n++
		}
	}
	return n
}

// isMessage reports whether it is an m.room.message event (safe to call
// from any goroutine: it never fails the test).
func isMessage(it client.Item) bool {
	var ev struct {
		Type string `json:"type"`
	}
	return it.Kind == client.KindEvent && json.Unmarshal(it.Event, &ev) == nil && ev.Type == "m.room.message"
}
