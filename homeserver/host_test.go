package homeserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
	"github.com/ferry-matrix/ferry/store"
)

const (
	carol = "@carol:hs.test"
	dave  = "@dave:hs.test"
)

// newHost returns a host over a fresh engine with alice, carol and dave
// registered.
func newHost(t *testing.T) *homeserver.Host {
	t.Helper()
	h := &homeserver.Host{Engine: newEngine(t)}
	for _, u := range []string{alice, carol, dave} {
		if _, err := h.PutUser(context.Background(), homeserver.User{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// hostRoom creates a public room of alice's.
func hostRoom(t *testing.T, h *homeserver.Host, version string) string {
	t.Helper()
	roomID, err := h.CreateRoom(context.Background(), homeserver.CreateRoomRequest{Creator: alice, Version: version, Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	return roomID
}

// requireRefusal fails unless err is a refusal of the wanted kind and,
// when code is set, errcode.
func requireRefusal(t *testing.T, what string, err error, want func(*homeserver.Error) bool, code string) {
	t.Helper()
	var he *homeserver.Error
	if !errors.As(err, &he) || !want(he) || (code != "" && he.MatrixCode() != code) {
		t.Fatalf("%s: got %v (%T), want a refusal of the expected kind %s", what, err, err, code)
	}
}

var (
	isBadRequest = (*homeserver.Error).BadRequest
	isForbidden  = (*homeserver.Error).Forbidden
	isNotFound   = (*homeserver.Error).NotFound
	isConflict   = (*homeserver.Error).Conflict
)

// snapshot is what a refusal must leave untouched: the host log head and
// every room's forward extremities.
func snapshot(t *testing.T, h *homeserver.Host) string {
	t.Helper()
	ctx := context.Background()
	head, err := h.Engine.Store.HostLogHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := h.Engine.Store.Rooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprint(head)
	for _, r := range rs {
		ext, err := h.Engine.Store.ForwardExtremities(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		out += fmt.Sprint(r.ID, r.Status, ext)
	}
	users, err := h.Users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return out + fmt.Sprint(users)
}

func eventID(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var ev struct {
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil || ev.EventID == "" {
		t.Fatalf("event without event_id: %s (%v)", raw, err)
	}
	return ev.EventID
}

func TestHost_Users(t *testing.T) {
	ctx := context.Background()
	h := &homeserver.Host{Engine: newEngine(t)}
	u, err := h.PutUser(ctx, homeserver.User{UserID: alice, DisplayName: "Alice"})
	if err != nil || u != (homeserver.User{UserID: alice, DisplayName: "Alice"}) {
		t.Fatalf("put user: %+v, %v", u, err)
	}
	if u, err = h.PutUser(ctx, homeserver.User{UserID: alice, AvatarURL: "mxc://hs.test/a"}); err != nil || u.AvatarURL != "mxc://hs.test/a" || u.DisplayName != "" {
		t.Fatalf("update user: %+v, %v", u, err)
	}
	for name, id := range map[string]string{"not an ID": "alice", "another server's": bob, "empty": "", "historical grammar, new user": "@Alice:hs.test"} {
		_, err := h.PutUser(ctx, homeserver.User{UserID: id})
		requireRefusal(t, name, err, isBadRequest, "")
	}
	_, err = h.User(ctx, carol)
	requireRefusal(t, "unknown user", err, isNotFound, "")
	requireRefusal(t, "delete unknown user", h.DeleteUser(ctx, carol), isNotFound, "")
	if _, err := h.PutUser(ctx, homeserver.User{UserID: carol}); err != nil {
		t.Fatal(err)
	}
	users, err := h.Users(ctx)
	if err != nil || len(users) != 2 || users[0].UserID != alice || users[1].UserID != carol {
		t.Fatalf("users %+v, %v", users, err)
	}

	// Deleting carol makes her leave the room she joined and the one she
	// was invited to.
	joined := hostRoom(t, h, "12")
	if _, _, err := h.JoinRoom(ctx, joined, carol, nil); err != nil {
		t.Fatal(err)
	}
	private, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Invite: []string{carol}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteUser(ctx, carol); err != nil {
		t.Fatal(err)
	}
	for _, roomID := range []string{joined, private} {
		if m := membershipOf(t, h, roomID, carol); m != "leave" {
			t.Fatalf("carol's membership in %s after deletion: %q", roomID, m)
		}
	}
	_, err = h.User(ctx, carol)
	requireRefusal(t, "deleted user", err, isNotFound, "")
}

func membershipOf(t *testing.T, h *homeserver.Host, roomID, userID string) string {
	t.Helper()
	ctx := context.Background()
	id, err := h.Engine.Store.CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.member", StateKey: userID})
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	se, err := h.Engine.Store.Event(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return se.Event.Membership()
}

// TestHost_Refusals: every refusal of the contract's table that the host
// operations make, each leaving the store as it was.
func TestHost_Refusals(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	roomID := hostRoom(t, h, "12")
	msg, err := h.Send(ctx, roomID, alice, "m.room.message", map[string]any{"body": "hi"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.PutAlias(ctx, "#taken:hs.test", roomID); err != nil {
		t.Fatal(err)
	}
	const stranger = "@stranger:hs.test" // not registered
	const unknownRoom = "!unknown:hs.test"
	const unknownEvent = "$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	before := snapshot(t, h)
	cases := []struct {
		name string
		want func(*homeserver.Error) bool
		code string
		op   func() error
	}{
		{"create: unregistered creator", isForbidden, "", func() error {
			_, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: stranger})
			return err
		}},
		{"create: creator of another server", isBadRequest, "", func() error {
			_, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: bob})
			return err
		}},
		{"create: unknown version", isBadRequest, "M_UNSUPPORTED_ROOM_VERSION", func() error {
			_, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "99"})
			return err
		}},
		{"create: unknown preset", isBadRequest, "", func() error {
			_, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Preset: "trusted_private_chat_x"})
			return err
		}},
		{"create: bad invitee", isBadRequest, "", func() error {
			_, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Invite: []string{"nobody"}})
			return err
		}},
		{"create: alias taken", isConflict, "M_ROOM_IN_USE", func() error {
			_, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Alias: "#taken:hs.test"})
			return err
		}},
		{"create: alias of another server", isBadRequest, "", func() error {
			_, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Alias: "#x:remote.test"})
			return err
		}},
		{"join: unregistered", isForbidden, "", func() error { _, _, err := h.JoinRoom(ctx, roomID, stranger, nil); return err }},
		{"join: bad room ID", isBadRequest, "", func() error { _, _, err := h.JoinRoom(ctx, "room", carol, nil); return err }},
		{"join: unknown local alias", isNotFound, "", func() error { _, _, err := h.JoinRoom(ctx, "#nowhere:hs.test", carol, nil); return err }},
		{"invite: sender not joined", isForbidden, "", func() error { _, err := h.Invite(ctx, roomID, carol, dave); return err }},
		{"invite: unregistered sender", isForbidden, "", func() error { _, err := h.Invite(ctx, roomID, stranger, dave); return err }},
		{"invite: unknown room", isNotFound, "", func() error { _, err := h.Invite(ctx, unknownRoom, alice, dave); return err }},
		{"invite: bad invitee", isBadRequest, "", func() error { _, err := h.Invite(ctx, roomID, alice, "dave"); return err }},
		{"leave: not joined", isForbidden, "", func() error { _, err := h.Leave(ctx, roomID, carol, ""); return err }},
		{"leave: unknown room", isNotFound, "", func() error { _, err := h.Leave(ctx, unknownRoom, alice, ""); return err }},
		{"kick: sender not joined", isForbidden, "", func() error { _, err := h.Kick(ctx, roomID, carol, alice, ""); return err }},
		{"ban: user of another server acting", isBadRequest, "", func() error { _, err := h.Ban(ctx, roomID, bob, carol, ""); return err }},
		{"unban: not banned", isForbidden, "", func() error { _, err := h.Unban(ctx, roomID, alice, carol, ""); return err }},
		{"send: unregistered", isForbidden, "", func() error {
			_, err := h.Send(ctx, roomID, stranger, "m.room.message", nil, "t1")
			return err
		}},
		{"send: not joined", isForbidden, "", func() error {
			_, err := h.Send(ctx, roomID, carol, "m.room.message", map[string]any{"body": "x"}, "t1")
			return err
		}},
		{"send: unknown room", isNotFound, "", func() error {
			_, err := h.Send(ctx, unknownRoom, alice, "m.room.message", nil, "")
			return err
		}},
		{"send: no type", isBadRequest, "", func() error { _, err := h.Send(ctx, roomID, alice, "", nil, ""); return err }},
		{"send: content too large", isBadRequest, "M_TOO_LARGE", func() error {
			_, err := h.Send(ctx, roomID, alice, "m.room.message", map[string]any{"body": strings.Repeat("x", 70000)}, "big")
			return err
		}},
		{"send: event just too large", isBadRequest, "", func() error {
			_, err := h.Send(ctx, roomID, alice, "m.room.message", map[string]any{"body": strings.Repeat("x", 65400)}, "")
			return err
		}},
		{"state: content too large", isBadRequest, "M_TOO_LARGE", func() error {
			_, err := h.SetState(ctx, roomID, alice, "m.room.topic", "", map[string]any{"topic": strings.Repeat("x", 70000)})
			return err
		}},
		{"state: not joined", isForbidden, "", func() error {
			_, err := h.SetState(ctx, roomID, carol, "m.room.topic", "", map[string]any{"topic": "x"})
			return err
		}},
		{"redact: unknown event", isNotFound, "", func() error { _, err := h.Redact(ctx, roomID, alice, unknownEvent, ""); return err }},
		{"redact: bad event ID", isBadRequest, "", func() error { _, err := h.Redact(ctx, roomID, alice, "event", ""); return err }},
		{"redact: not joined", isForbidden, "", func() error { _, err := h.Redact(ctx, roomID, carol, msg, ""); return err }},
		{"typing: not joined", isForbidden, "", func() error { return h.Typing(ctx, roomID, carol, true, 0) }},
		{"receipt: unknown event", isNotFound, "", func() error { return h.Receipt(ctx, roomID, alice, "", unknownEvent) }},
		{"receipt: not joined", isForbidden, "", func() error { return h.Receipt(ctx, roomID, carol, "", msg) }},
		{"room: unknown", isNotFound, "", func() error { _, err := h.Room(ctx, unknownRoom); return err }},
		{"state: unknown room", isNotFound, "", func() error { _, err := h.State(ctx, unknownRoom); return err }},
		{"messages: unknown room", isNotFound, "", func() error { _, _, err := h.Messages(ctx, unknownRoom, "", true, 10); return err }},
		{"messages: limit 0", isBadRequest, "", func() error { _, _, err := h.Messages(ctx, roomID, "", true, 0); return err }},
		{"messages: limit too large", isBadRequest, "", func() error { _, _, err := h.Messages(ctx, roomID, "", true, 1001); return err }},
		{"messages: bad token", isBadRequest, "", func() error { _, _, err := h.Messages(ctx, roomID, "s12", true, 10); return err }},
		{"alias: taken", isConflict, "M_ROOM_IN_USE", func() error { return h.PutAlias(ctx, "#taken:hs.test", roomID) }},
		{"alias: another server's", isBadRequest, "", func() error { return h.PutAlias(ctx, "#x:remote.test", roomID) }},
		{"alias: unknown room", isNotFound, "", func() error { return h.PutAlias(ctx, "#new:hs.test", unknownRoom) }},
		{"alias: unknown", isNotFound, "", func() error { _, _, err := h.Alias(ctx, "#new:hs.test"); return err }},
		{"alias: bad", isBadRequest, "", func() error { _, _, err := h.Alias(ctx, "new"); return err }},
		{"delete alias: unknown", isNotFound, "", func() error { return h.DeleteAlias(ctx, "#new:hs.test") }},
		{"events: bad limit", isBadRequest, "", func() error { _, err := h.Events(ctx, 0, 0); return err }},
	}
	for _, c := range cases {
		requireRefusal(t, c.name, c.op(), c.want, c.code)
		if after := snapshot(t, h); after != before {
			t.Fatalf("%s changed the store:\n%s\n%s", c.name, before, after)
		}
	}
}

func TestHost_AutoRegister(t *testing.T) {
	ctx := context.Background()
	h := &homeserver.Host{Engine: newEngine(t), AutoRegisterUsers: true}
	roomID, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := h.User(ctx, alice); err != nil || u.UserID != alice {
		t.Fatalf("alice was not registered on first use: %+v, %v", u, err)
	}
	s, err := h.Room(ctx, roomID)
	if err != nil || s.RoomVersion != homeserver.DefaultHostRoomVersion {
		t.Fatalf("room %+v, %v; want the default version", s, err)
	}
	// A user of another server is never registered.
	_, err = h.Send(ctx, roomID, bob, "m.room.message", nil, "")
	requireRefusal(t, "remote sender", err, isBadRequest, "")
}

func TestHost_SendTxn(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	roomID := hostRoom(t, h, "12")
	if _, _, err := h.JoinRoom(ctx, roomID, carol, nil); err != nil {
		t.Fatal(err)
	}
	content := map[string]any{"body": "once"}
	first, err := h.Send(ctx, roomID, alice, "m.room.message", content, "txn1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.Send(ctx, roomID, alice, "m.room.message", content, "txn1")
	if err != nil || again != first {
		t.Fatalf("resent txn gave %s, %v; want %s", again, err, first)
	}
	// Another sender's txn1 is another event; so is alice's txn2.
	other, err := h.Send(ctx, roomID, carol, "m.room.message", content, "txn1")
	if err != nil || other == first {
		t.Fatalf("carol's txn1: %s, %v", other, err)
	}
	second, err := h.Send(ctx, roomID, alice, "m.room.message", content, "txn2")
	if err != nil || second == first {
		t.Fatalf("txn2: %s, %v", second, err)
	}

	// Concurrent identical requests make one event.
	const n = 16
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = h.Send(ctx, roomID, alice, "m.room.message", map[string]any{"body": "race"}, "race")
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("concurrent send %d: %s, %v; want %s", i, ids[i], errs[i], ids[0])
		}
	}
	chunk, _, err := h.Messages(ctx, roomID, "", true, 1000)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, raw := range chunk {
		var ev struct {
			Sender  string         `json:"sender"`
			Content map[string]any `json:"content"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		if body, ok := ev.Content["body"].(string); ok {
			count[ev.Sender+" "+body]++
		}
	}
	want := map[string]int{alice + " once": 2, carol + " once": 1, alice + " race": 1}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Fatalf("messages in the room %v, want %v", count, want)
	}
	// The record survives: a new Host over the same store still knows it.
	h2 := &homeserver.Host{Engine: h.Engine}
	if id, err := h2.Send(ctx, roomID, alice, "m.room.message", content, "txn1"); err != nil || id != first {
		t.Fatalf("txn1 through a new host: %s, %v", id, err)
	}
}

func TestHost_Redact(t *testing.T) {
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			ctx := context.Background()
			h := newHost(t)
			roomID := hostRoom(t, h, version)
			target, err := h.Send(ctx, roomID, alice, "m.room.message", map[string]any{"body": "oops"}, "")
			if err != nil {
				t.Fatal(err)
			}
			redactionID, err := h.Redact(ctx, roomID, alice, target, "typo")
			if err != nil {
				t.Fatal(err)
			}
			se, err := h.Engine.Store.Event(ctx, redactionID)
			if err != nil {
				t.Fatal(err)
			}
			obj := se.Event.Object()
			content := se.Event.Content()
			v, _ := rooms.LookupVersion(version)
			if v.RedactsInContent {
				if content["redacts"] != target || obj["redacts"] != nil {
					t.Fatalf("v%s redaction names its target in content: %s", version, se.Event.JSON())
				}
			} else if obj["redacts"] != target || content["redacts"] != nil {
				t.Fatalf("v%s redaction names its target at the top level: %s", version, se.Event.JSON())
			}
			if content["reason"] != "typo" {
				t.Fatalf("reason missing: %s", se.Event.JSON())
			}
			red, err := h.Engine.Store.Event(ctx, target)
			if err != nil || !red.Redacted || len(red.Event.Content()) != 0 {
				t.Fatalf("target after redaction: %+v, %v", red, err)
			}
		})
	}
}

func TestHost_KickBanUnban(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	roomID := hostRoom(t, h, "12")
	joinRemote(t, h.Engine, roomID, bob)
	for _, u := range []string{carol, dave} {
		if _, _, err := h.JoinRoom(ctx, roomID, u, nil); err != nil {
			t.Fatal(err)
		}
	}
	memberEvent := func(id string) *rooms.Event {
		t.Helper()
		se, err := h.Engine.Store.Event(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return se.Event
	}
	// carol has no power to kick.
	_, err := h.Kick(ctx, roomID, carol, dave, "")
	requireRefusal(t, "kick without power", err, isForbidden, "")

	kick, err := h.Kick(ctx, roomID, alice, bob, "spam")
	if err != nil {
		t.Fatal(err)
	}
	if ev := memberEvent(kick); ev.Sender() != alice || ev.Membership() != "leave" || ev.Content()["reason"] != "spam" {
		t.Fatalf("kick %s", ev.JSON())
	}
	ban, err := h.Ban(ctx, roomID, alice, carol, "rude")
	if err != nil {
		t.Fatal(err)
	}
	if ev := memberEvent(ban); ev.Membership() != "ban" || ev.Content()["reason"] != "rude" {
		t.Fatalf("ban %s", ev.JSON())
	}
	_, _, err = h.JoinRoom(ctx, roomID, carol, nil)
	requireRefusal(t, "banned user joins", err, isForbidden, "")
	unban, err := h.Unban(ctx, roomID, alice, carol, "forgiven")
	if err != nil {
		t.Fatal(err)
	}
	if ev := memberEvent(unban); ev.Membership() != "leave" || ev.Sender() != alice {
		t.Fatalf("unban %s", ev.JSON())
	}
	if _, _, err := h.JoinRoom(ctx, roomID, carol, nil); err != nil {
		t.Fatalf("carol rejoins after the unban: %v", err)
	}
	// Leaving with a reason.
	leave, err := h.Leave(ctx, roomID, dave, "bye")
	if err != nil {
		t.Fatal(err)
	}
	if ev := memberEvent(leave); ev.Membership() != "leave" || ev.Content()["reason"] != "bye" || ev.Sender() != dave {
		t.Fatalf("leave %s", ev.JSON())
	}
}

func TestHost_InviteKnock(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	roomID, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Alias: "#knockers:hs.test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.SetState(ctx, roomID, alice, "m.room.join_rules", "", map[string]any{"join_rule": "knock"}); err != nil {
		t.Fatal(err)
	}
	knock, err := h.Knock(ctx, "#knockers:hs.test", dave, "let me in", nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := membershipOf(t, h, roomID, dave); m != "knock" {
		t.Fatalf("dave's membership %q after knock %s", m, knock)
	}
	if se, err := h.Engine.Store.Event(ctx, knock); err != nil || se.Event.Content()["reason"] != "let me in" {
		t.Fatalf("knock %+v, %v; want the reason in its content", se, err)
	}
	_, err = h.Knock(ctx, roomID, "@stranger:hs.test", "", nil)
	requireRefusal(t, "knock by an unregistered user", err, isForbidden, "")
	_, err = h.Knock(ctx, "#nowhere:hs.test", carol, "", nil)
	requireRefusal(t, "knock on an unknown alias", err, isNotFound, "")
	invite, err := h.Invite(ctx, roomID, alice, carol)
	if err != nil {
		t.Fatal(err)
	}
	if m := membershipOf(t, h, roomID, carol); m != "invite" {
		t.Fatalf("carol's membership %q after invite %s", m, invite)
	}
	gotRoom, joinID, err := h.JoinRoom(ctx, "#knockers:hs.test", carol, nil)
	if err != nil || gotRoom != roomID || joinID == "" {
		t.Fatalf("join by alias: %s %s %v", gotRoom, joinID, err)
	}
}

func TestHost_RoomsStateAliases(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	roomID, err := h.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Preset: homeserver.PresetPublicChat,
		Name: "Harbour", Topic: "boats", Alias: "#harbour:hs.test"})
	if err != nil {
		t.Fatal(err)
	}
	joinRemote(t, h.Engine, roomID, bob)
	if _, _, err := h.JoinRoom(ctx, roomID, carol, nil); err != nil {
		t.Fatal(err)
	}
	// A room without local members is not listed.
	empty := hostRoom(t, h, "10")
	if _, err := h.Leave(ctx, empty, alice, ""); err != nil {
		t.Fatal(err)
	}
	s, err := h.Room(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	want := homeserver.RoomSummary{RoomID: roomID, RoomVersion: "12", Name: "Harbour", Topic: "boats", CanonicalAlias: "#harbour:hs.test",
		JoinedLocalUsers: []string{alice, carol}, JoinedMembers: 3, Servers: []string{ourName, remote}}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Fatalf("summary %+v\nwant %+v", s, want)
	}
	list, err := h.Rooms(ctx)
	if err != nil || len(list) != 1 || list[0].RoomID != roomID {
		t.Fatalf("rooms %+v, %v", list, err)
	}
	es, err := h.Room(ctx, empty)
	if err != nil || es.JoinedLocalUsers == nil || es.Servers == nil || len(es.JoinedLocalUsers) != 0 {
		t.Fatalf("empty room summary %+v, %v", es, err)
	}

	state, err := h.State(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := h.Engine.Store.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if len(state) != len(cur) {
		t.Fatalf("%d state events, want %d", len(state), len(cur))
	}
	for _, raw := range state {
		id := eventID(t, raw)
		if !slices.Contains(mapValues(cur), id) {
			t.Fatalf("state event %s is not in the current state", id)
		}
	}

	// Aliases.
	if err := h.PutAlias(ctx, "#second:hs.test", roomID); err != nil {
		t.Fatal(err)
	}
	got, servers, err := h.Alias(ctx, "#second:hs.test")
	if err != nil || got != roomID || !slices.Equal(servers, []string{ourName, remote}) {
		t.Fatalf("alias: %s %v %v", got, servers, err)
	}
	if err := h.DeleteAlias(ctx, "#second:hs.test"); err != nil {
		t.Fatal(err)
	}
	_, _, err = h.Alias(ctx, "#second:hs.test")
	requireRefusal(t, "deleted alias", err, isNotFound, "")

	dests, err := h.Destinations(ctx)
	if err != nil || dests == nil || len(dests) != 0 {
		t.Fatalf("destinations without delivery: %v, %v", dests, err)
	}
	h.Delivery = &homeserver.Delivery{ServerName: ourName, Store: h.Engine.Store}
	dests, err = h.Destinations(ctx)
	if err != nil || len(dests) != 1 || dests[0].Name != remote || dests[0].Queued == 0 {
		t.Fatalf("destinations: %+v, %v; want remote.test with queued events", dests, err)
	}
}

func mapValues(m store.StateMap) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestHost_Messages(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	roomID := hostRoom(t, h, "12")
	var sent []string
	for i := range 25 {
		id, err := h.Send(ctx, roomID, alice, "m.room.message", map[string]any{"body": fmt.Sprint(i)}, "")
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, id)
	}
	// Backwards from the newest, in pages of 7.
	var back []string
	from := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("backwards paging does not end")
		}
		chunk, end, err := h.Messages(ctx, roomID, from, true, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range chunk {
			back = append(back, eventID(t, raw))
		}
		if end == "" {
			break
		}
		from = end
	}
	// The create event, alice's join, power levels, join rules and
	// history visibility, then the messages.
	if len(back) != 5+25 {
		t.Fatalf("%d events paging backwards, want 30", len(back))
	}
	for i, id := range sent {
		if back[len(sent)-1-i] != id {
			t.Fatalf("backwards order: position %d is %s, want %s", len(sent)-1-i, back[len(sent)-1-i], id)
		}
	}
	first, err := h.Engine.Store.Event(ctx, back[len(back)-1])
	if err != nil || first.Event.Type() != "m.room.create" {
		t.Fatalf("the oldest event is not the create event: %v", err)
	}
	// Forwards from the oldest, in pages of 11: the same events reversed.
	var fwd []string
	from = ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("forwards paging does not end")
		}
		chunk, end, err := h.Messages(ctx, roomID, from, false, 11)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range chunk {
			fwd = append(fwd, eventID(t, raw))
		}
		if end == "" {
			break
		}
		from = end
	}
	slices.Reverse(fwd)
	if !slices.Equal(fwd, back) {
		t.Fatalf("forwards %v\nbackwards %v", fwd, back)
	}
	// A backwards token pages forwards from the same place.
	_, end, err := h.Messages(ctx, roomID, "", true, 5)
	if err != nil {
		t.Fatal(err)
	}
	chunk, _, err := h.Messages(ctx, roomID, end, false, 10)
	if err != nil || len(chunk) != 4 {
		t.Fatalf("forwards after the 5 newest: %d events, %v; want the 4 newer than the token's", len(chunk), err)
	}
}

func TestHost_TypingReceipts(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	h.Delivery = &homeserver.Delivery{ServerName: ourName, Store: h.Engine.Store}
	roomID := hostRoom(t, h, "12")
	joinRemote(t, h.Engine, roomID, bob)
	msg, err := h.Send(ctx, roomID, alice, "m.room.message", map[string]any{"body": "read me"}, "")
	if err != nil {
		t.Fatal(err)
	}
	queued := func() int {
		t.Helper()
		dests, err := h.Destinations(ctx)
		if err != nil || len(dests) != 1 {
			t.Fatalf("destinations %+v, %v", dests, err)
		}
		return dests[0].Queued
	}
	base := queued()
	if err := h.Receipt(ctx, roomID, alice, "", msg); err != nil {
		t.Fatal(err)
	}
	if got := queued(); got != base+1 {
		t.Fatalf("queued %d after a receipt, want %d", got, base+1)
	}
	// Typing with a timeout: the notice, then its withdrawal once the
	// timeout passes.
	if err := h.Typing(ctx, roomID, alice, true, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for queued() < base+3 {
		if time.Now().After(deadline) {
			t.Fatalf("queued %d: the typing notice was not withdrawn", queued())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHost_Events(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	roomID := hostRoom(t, h, "12")
	joinRemote(t, h.Engine, roomID, bob)
	typing := fmt.Sprintf(`{"room_id":%q,"user_id":%q,"typing":true}`, roomID, bob)
	if err := h.Engine.ReceiveEDU(ctx, remote, "m.typing", []byte(typing)); err != nil {
		t.Fatal(err)
	}
	items, err := h.Events(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 7 {
		t.Fatalf("%d items, want the 5 events of the creation, bob's join and his typing", len(items))
	}
	for i, it := range items {
		if i > 0 && it.Pos <= items[i-1].Pos {
			t.Fatalf("positions out of order: %v", items)
		}
		if it.RoomID != roomID {
			t.Fatalf("item %d of room %q", i, it.RoomID)
		}
	}
	last := items[len(items)-1]
	if last.Kind != "edu" || last.Event != nil || !json.Valid(last.EDU) {
		t.Fatalf("last item %+v", last)
	}
	if id := eventID(t, items[5].Event); items[5].Kind != "event" || membershipOf(t, h, roomID, bob) != "join" || id == "" {
		t.Fatalf("item 5 %+v", items[5])
	}
	// Paging the stream.
	rest, err := h.Events(ctx, items[2].Pos, 2)
	if err != nil || len(rest) != 2 || rest[0].Pos != items[3].Pos {
		t.Fatalf("events after %d: %+v, %v", items[2].Pos, rest, err)
	}
	// A damaged entry is passed on, not skipped.
	if _, err := h.Engine.Store.AppendHostLog(ctx, store.HostLogEntry{Kind: store.HostInvite, RoomID: roomID, Payload: []byte("not JSON")}); err != nil {
		t.Fatal(err)
	}
	damaged, err := h.Events(ctx, last.Pos, 10)
	if err != nil || len(damaged) != 1 || damaged[0].Kind != "invite" || damaged[0].Event != nil {
		t.Fatalf("damaged entry: %+v, %v", damaged, err)
	}
	last = damaged[0]
	// Waiting: at once when an item is there, until ctx ends otherwise,
	// and woken by a new item.
	if err := h.WaitEvents(ctx, items[2].Pos); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := h.WaitEvents(short, last.Pos); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait at the head: %v", err)
	}
	woke := make(chan error, 1)
	go func() { woke <- h.WaitEvents(ctx, last.Pos) }()
	if _, err := h.Send(ctx, roomID, alice, "m.room.message", map[string]any{"body": "wake"}, ""); err != nil {
		t.Fatal(err)
	}
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
}

// TestHost_InviteStreamItem: an invite from another server reaches the
// stream as an invite item carrying the event with its event_id.
func TestHost_InviteStreamItem(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	v, _ := rooms.LookupVersion("12")
	create, err := rooms.BuildEvent(v, rooms.EventTemplate{Type: "m.room.create", StateKey: rooms.StringPtr(""), Sender: bob,
		Content: map[string]any{"room_version": "12"}, Depth: 1, OriginServerTS: 1}, roomstest.UserKey(bob))
	if err != nil {
		t.Fatal(err)
	}
	roomID := create.RoomID()
	invite, err := rooms.BuildEvent(v, rooms.EventTemplate{Type: "m.room.member", StateKey: rooms.StringPtr(carol), Sender: bob, RoomID: roomID,
		Content: map[string]any{"membership": "invite"}, Depth: 2, OriginServerTS: 2, PrevEvents: []string{create.EventID()}}, roomstest.UserKey(bob))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Engine.ReceiveInvite(ctx, remote, roomID, invite.EventID(), "12", invite.JSON(), [][]byte{create.JSON()}); err != nil {
		t.Fatal(err)
	}
	items, err := h.Events(ctx, 0, 100)
	if err != nil || len(items) != 1 || items[0].Kind != "invite" || eventID(t, items[0].Event) != invite.EventID() {
		t.Fatalf("items %+v, %v", items, err)
	}
	// Unregistered invitees are refused unless the engine registers them.
	stranger := "@stranger:hs.test"
	other, err := rooms.BuildEvent(v, rooms.EventTemplate{Type: "m.room.member", StateKey: rooms.StringPtr(stranger), Sender: bob, RoomID: roomID,
		Content: map[string]any{"membership": "invite"}, Depth: 2, OriginServerTS: 3, PrevEvents: []string{create.EventID()}}, roomstest.UserKey(bob))
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Engine.ReceiveInvite(ctx, remote, roomID, other.EventID(), "12", other.JSON(), [][]byte{create.JSON()})
	requireRefusal(t, "invite for an unregistered user", err, isForbidden, "")
	h.Engine.AutoRegisterUsers = true
	if _, err := h.Engine.ReceiveInvite(ctx, remote, roomID, other.EventID(), "12", other.JSON(), [][]byte{create.JSON()}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.User(ctx, stranger); err != nil {
		t.Fatalf("the invitee was not registered: %v", err)
	}
}
