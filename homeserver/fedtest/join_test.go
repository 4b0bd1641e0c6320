package fedtest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// TestJoinRemoteRoom: server A creates a public room, a user of B joins it
// through A, messages and state flow both ways, and both servers end with
// the same current state. C, which is not in the room, is offered first
// and skipped.
func TestJoinRemoteRoom(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			nodes := startNodes(t, 3)
			a, b, c := nodes[0], nodes[1], nodes[2]
			ctx := testContext(t)
			alice, bob := a.User("alice"), b.User("bob")
			roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: version, Preset: homeserver.PresetPublicChat})
			if err != nil {
				t.Fatal(err)
			}
			before := a.Say(t, roomID, alice, "before bob")

			join, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{c.Name, a.Name})
			if err != nil {
				t.Fatal(err)
			}
			if join.Membership() != "join" || join.Sender() != bob || join.RoomID() != roomID {
				t.Fatalf("join event %s", join.JSON())
			}
			for _, n := range []*node{a, b} {
				if m := n.membership(t, roomID, bob); m != "join" {
					t.Fatalf("%s: bob's membership is %q", n.Name, m)
				}
				if m := n.membership(t, roomID, alice); m != "join" {
					t.Fatalf("%s: alice's membership is %q", n.Name, m)
				}
			}
			// History before the join is not fetched: B holds the room's
			// state, not its timeline.
			if _, err := b.DB.Event(ctx, before); err == nil {
				t.Fatal("B holds a message from before its join")
			}
			requireSameState(t, roomID, a, b)

			// A to B.
			hello := a.Say(t, roomID, alice, "hello bob")
			topic := a.SetState(t, roomID, alice, "m.room.topic", "", map[string]any{"topic": "ferries"})
			a.Flush(t)
			b.WaitEvent(t, hello)
			b.WaitEvent(t, topic)

			// B to A.
			reply := b.Say(t, roomID, bob, "hello alice")
			b.Flush(t)
			a.WaitEvent(t, reply)

			// Both at once: a fork that both resolve the same way.
			fromA := a.Say(t, roomID, alice, "crossing 1")
			fromB := b.Say(t, roomID, bob, "crossing 2")
			a.Flush(t)
			b.Flush(t)
			a.WaitEvent(t, fromB)
			b.WaitEvent(t, fromA)
			requireSameState(t, roomID, a, b)

			// C never joined.
			if _, err := c.DB.Room(ctx, roomID); err == nil {
				t.Fatal("C holds the room")
			}
		})
	}
}

// TestJoinRemoteRoom_Delivering: the same exchange with each server's own
// outbound delivery sending what it queues: nothing is pushed by the test.
func TestJoinRemoteRoom_Delivering(t *testing.T) {
	t.Parallel()
	nodes := startDeliveringNodes(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := testContext(t)
	alice, bob, carol := a.User("alice"), b.User("bob"), c.User("carol")
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name}); err != nil {
		t.Fatal(err)
	}
	carolJoin, err := c.Engine.JoinRoom(ctx, roomID, carol, []string{a.Name})
	if err != nil {
		t.Fatal(err)
	}
	b.WaitEvent(t, carolJoin.EventID())
	hello := a.Say(t, roomID, alice, "hello")
	reply := b.Say(t, roomID, bob, "hi")
	last := c.Say(t, roomID, carol, "hey")
	for _, n := range nodes {
		n.WaitEvent(t, hello)
		n.WaitEvent(t, reply)
		n.WaitEvent(t, last)
	}
	// Every server has every message and the same state.
	requireSameState(t, roomID, a, b, c)
}

// TestJoinByAlias: a user of B joins A's room by A's alias, resolved over
// /query/directory.
func TestJoinByAlias(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx := testContext(t)
	alice, bob := a.User("alice"), b.User("bob")
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	alias := "#harbour:" + a.Name
	if err := a.DB.PutAlias(ctx, store.Alias{Alias: alias, RoomID: roomID, Creator: alice}); err != nil {
		t.Fatal(err)
	}
	join, err := b.Engine.JoinRoomByAlias(ctx, alias, bob)
	if err != nil {
		t.Fatal(err)
	}
	if join.RoomID() != roomID {
		t.Fatalf("joined %s, want %s", join.RoomID(), roomID)
	}
	requireSameState(t, roomID, a, b)
	if _, err := b.Engine.JoinRoomByAlias(ctx, "#nowhere:"+a.Name, bob); err == nil {
		t.Fatal("join by an unknown alias succeeded")
	}
}

// TestJoinRoom_NoServerCanHelp: when every via server fails, JoinRoom says
// why and leaves nothing behind.
func TestJoinRoom_NoServerCanHelp(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx := testContext(t)
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: a.User("alice"), Version: "12", Preset: homeserver.PresetPrivateChat})
	if err != nil {
		t.Fatal(err)
	}
	// An invite-only room: A refuses with 403.
	_, err = b.Engine.JoinRoom(ctx, roomID, b.User("bob"), []string{a.Name})
	var he *federation.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusForbidden {
		t.Fatalf("join of an invite-only room: %v, want a 403 from %s", err, a.Name)
	}
	if _, err := b.DB.Room(ctx, roomID); err == nil {
		t.Fatal("B holds the room after a failed join")
	}
	if _, err := b.Engine.JoinRoom(ctx, roomID, b.User("bob"), []string{b.Name}); err == nil {
		t.Fatal("join with only ourselves as via succeeded")
	}
	if _, err := b.Engine.JoinRoom(ctx, roomID, a.User("alice"), []string{a.Name}); err == nil {
		t.Fatal("join of another server's user succeeded")
	}
}

// TestServeJoin_BadInputs: make_join and send_join refuse what the spec
// says they must, with its status codes.
func TestServeJoin_BadInputs(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx := testContext(t)
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: a.User("alice"), Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	bob := b.User("bob")
	wantStatus := func(t *testing.T, err error, status int, code string) {
		t.Helper()
		var he *federation.HTTPError
		if !errors.As(err, &he) || he.Status != status || he.ErrCode != code {
			t.Fatalf("got %v, want %d %s", err, status, code)
		}
	}
	t.Run("make_join unknown room", func(t *testing.T) {
		_, _, err := b.Client.MakeJoin(ctx, a.Name, "!nothere:"+a.Name, bob, rooms.SupportedVersionIDs())
		wantStatus(t, err, http.StatusNotFound, "M_NOT_FOUND")
	})
	t.Run("make_join unsupported versions", func(t *testing.T) {
		_, _, err := b.Client.MakeJoin(ctx, a.Name, roomID, bob, []string{"1", "2"})
		wantStatus(t, err, http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION")
	})
	t.Run("make_join for a user of another server", func(t *testing.T) {
		_, _, err := b.Client.MakeJoin(ctx, a.Name, roomID, a.User("mallory"), rooms.SupportedVersionIDs())
		wantStatus(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})

	v, err := rooms.LookupVersion("12")
	if err != nil {
		t.Fatal(err)
	}
	_, raw, err := b.Client.MakeJoin(ctx, a.Name, roomID, bob, rooms.SupportedVersionIDs())
	if err != nil {
		t.Fatal(err)
	}
	tmpl := templateOf(t, raw)
	build := func(t *testing.T, edit func(*rooms.EventTemplate)) *rooms.Event {
		t.Helper()
		et := tmpl
		et.Content = map[string]any{"membership": "join"}
		edit(&et)
		ev, err := rooms.BuildEvent(v, et, b.Engine.Signer)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	t.Run("send_join with membership leave", func(t *testing.T) {
		ev := build(t, func(et *rooms.EventTemplate) { et.Content = map[string]any{"membership": "leave"} })
		_, _, _, err := b.Client.SendJoin(ctx, a.Name, roomID, ev.EventID(), ev.JSON())
		wantStatus(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("send_join for a user of another server", func(t *testing.T) {
		mallory := a.User("mallory")
		ev := build(t, func(et *rooms.EventTemplate) { et.Sender, et.StateKey = mallory, rooms.StringPtr(mallory) })
		_, _, _, err := b.Client.SendJoin(ctx, a.Name, roomID, ev.EventID(), ev.JSON())
		wantStatus(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("send_join under another event ID", func(t *testing.T) {
		ev := build(t, func(*rooms.EventTemplate) {})
		other := build(t, func(et *rooms.EventTemplate) { et.OriginServerTS++ })
		_, _, _, err := b.Client.SendJoin(ctx, a.Name, roomID, other.EventID(), ev.JSON())
		wantStatus(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("send_join unknown room", func(t *testing.T) {
		ev := build(t, func(*rooms.EventTemplate) {})
		_, _, _, err := b.Client.SendJoin(ctx, a.Name, "!nothere:"+a.Name, ev.EventID(), ev.JSON())
		wantStatus(t, err, http.StatusNotFound, "M_NOT_FOUND")
	})
	t.Run("send_join of a member the rules refuse", func(t *testing.T) {
		// Well-formed and signed, but listing no auth events: it fails
		// the auth rules and is refused, not accepted.
		ev := build(t, func(et *rooms.EventTemplate) { et.AuthEvents = nil })
		_, _, _, err := b.Client.SendJoin(ctx, a.Name, roomID, ev.EventID(), ev.JSON())
		wantStatus(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})
	t.Run("send_leave of a join", func(t *testing.T) {
		ev := build(t, func(*rooms.EventTemplate) {})
		err := b.Client.SendLeave(ctx, a.Name, roomID, ev.EventID(), ev.JSON())
		wantStatus(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("make_leave unknown room", func(t *testing.T) {
		_, _, err := b.Client.MakeLeave(ctx, a.Name, "!nothere:"+a.Name, bob)
		wantStatus(t, err, http.StatusNotFound, "M_NOT_FOUND")
	})
	t.Run("make_leave of a stranger", func(t *testing.T) {
		_, _, err := b.Client.MakeLeave(ctx, a.Name, roomID, bob)
		wantStatus(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})
	t.Run("make_knock on a public room", func(t *testing.T) {
		_, _, err := b.Client.MakeKnock(ctx, a.Name, roomID, bob, rooms.SupportedVersionIDs())
		wantStatus(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})
	t.Run("send_join accepted", func(t *testing.T) {
		ev := build(t, func(*rooms.EventTemplate) {})
		state, chain, join, err := b.Client.SendJoin(ctx, a.Name, roomID, ev.EventID(), ev.JSON())
		if err != nil {
			t.Fatal(err)
		}
		if len(state) != 5 || len(chain) == 0 || len(join) == 0 {
			t.Fatalf("state %d events, auth chain %d, event %d bytes", len(state), len(chain), len(join))
		}
		if m := a.membership(t, roomID, bob); m != "join" {
			t.Fatalf("bob's membership on A is %q", m)
		}
	})
}

// templateOf reads a make_join template into an EventTemplate.
func templateOf(t *testing.T, raw []byte) rooms.EventTemplate {
	t.Helper()
	tree, err := rooms.ParseJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	obj := tree.(map[string]any)
	list := func(k string) []string {
		var out []string
		for _, x := range obj[k].([]any) {
			out = append(out, x.(string))
		}
		return out
	}
	sk := obj["state_key"].(string)
	return rooms.EventTemplate{
		Type: obj["type"].(string), StateKey: &sk, Sender: obj["sender"].(string), RoomID: obj["room_id"].(string),
		PrevEvents: list("prev_events"), AuthEvents: list("auth_events"), Depth: obj["depth"].(int64),
		OriginServerTS: obj["origin_server_ts"].(int64),
	}
}

// TestJoin_ResidentFansOut: a third server joins through the room's
// creator; the server that joined before learns of the join from the
// resident, and all three then exchange events and agree on the state.
func TestJoin_ResidentFansOut(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := testContext(t)
	alice, bob, carol := a.User("alice"), b.User("bob"), c.User("carol")
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name}); err != nil {
		t.Fatal(err)
	}
	carolJoin, err := c.Engine.JoinRoom(ctx, roomID, carol, []string{a.Name})
	if err != nil {
		t.Fatal(err)
	}
	a.Flush(t)
	b.WaitEvent(t, carolJoin.EventID())
	if m := b.membership(t, roomID, carol); m != "join" {
		t.Fatalf("B: carol's membership is %q", m)
	}
	// C queued its join for B as well; a second copy changes nothing.
	c.Flush(t)

	fromB := b.Say(t, roomID, bob, "hello both")
	b.Flush(t)
	a.WaitEvent(t, fromB)
	c.WaitEvent(t, fromB)
	fromC := c.Say(t, roomID, carol, "hello")
	c.Flush(t)
	a.WaitEvent(t, fromC)
	b.WaitEvent(t, fromC)
	requireSameState(t, roomID, a, b, c)
}

// TestJoinRestrictedRoom: a room whose join rule admits the members of
// another room. A user of B who is in that room joins through A, which
// names one of its users as the authoriser and countersigns; a user who is
// not is refused; a room allowing only a room A is not in cannot be
// judged by A.
func TestJoinRestrictedRoom(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			nodes := startNodes(t, 2)
			a, b := nodes[0], nodes[1]
			ctx := testContext(t)
			alice, bob, dave := a.User("alice"), b.User("bob"), b.User("dave")
			create := func(preset string) string {
				id, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: version, Preset: preset})
				if err != nil {
					t.Fatal(err)
				}
				return id
			}
			space := create(homeserver.PresetPublicChat)
			restricted := create(homeserver.PresetPrivateChat)
			a.SetState(t, restricted, alice, "m.room.join_rules", "", map[string]any{
				"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}},
			})
			elsewhere := create(homeserver.PresetPrivateChat)
			a.SetState(t, elsewhere, alice, "m.room.join_rules", "", map[string]any{
				"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": "!unknown:" + b.Name}},
			})

			if _, err := b.Engine.JoinRoom(ctx, space, bob, []string{a.Name}); err != nil {
				t.Fatal(err)
			}
			join, err := b.Engine.JoinRoom(ctx, restricted, bob, []string{a.Name})
			if err != nil {
				t.Fatal(err)
			}
			if join.Content()["join_authorised_via_users_server"] != alice || len(rooms.Signatures(join.Object(), a.Name)) == 0 {
				t.Fatalf("restricted join %s", join.JSON())
			}
			requireSameState(t, restricted, a, b)

			wantCode := func(t *testing.T, err error, status int, code string) {
				t.Helper()
				var he *federation.HTTPError
				if !errors.As(err, &he) || he.Status != status || he.ErrCode != code {
					t.Fatalf("got %v, want %d %s", err, status, code)
				}
			}
			// B is in the room now, so a join of dave through the engine
			// would be local; ask A directly.
			_, _, err = b.Client.MakeJoin(ctx, a.Name, restricted, dave, rooms.SupportedVersionIDs())
			wantCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
			_, err = b.Engine.JoinRoom(ctx, elsewhere, bob, []string{a.Name})
			wantCode(t, err, http.StatusBadRequest, "M_UNABLE_TO_AUTHORISE_JOIN")

			// Once in the space, dave joins too: B holds the room but none
			// of its users may invite, hence authorise joins, so A does.
			pl := map[string]any{"invite": 50}
			if version == "10" {
				pl["users"] = map[string]any{alice: 100}
			}
			a.SetState(t, restricted, alice, "m.room.power_levels", "", pl)
			if _, err := b.Engine.JoinRoom(ctx, space, dave, []string{a.Name}); err != nil {
				t.Fatal(err)
			}
			a.Flush(t)
			b.Flush(t)
			daveJoin, err := b.Engine.JoinRoom(ctx, restricted, dave, []string{a.Name})
			if err != nil {
				t.Fatal(err)
			}
			if daveJoin.Content()["join_authorised_via_users_server"] != alice {
				t.Fatalf("dave's join %s", daveJoin.JSON())
			}
			if m := b.membership(t, restricted, dave); m != "join" {
				t.Fatalf("B: dave's membership is %q", m)
			}
			a.Flush(t)
			requireSameState(t, restricted, a, b)
		})
	}
}

// tamperingJoiner is a federation client whose send_join answers are
// altered on the way in, as a lying or broken resident would send them.
type tamperingJoiner struct {
	*federation.Client
	tamper func(state, chain [][]byte) ([][]byte, [][]byte)
}

func (tj tamperingJoiner) SendJoin(ctx context.Context, server, roomID, eventID string, event []byte) ([][]byte, [][]byte, []byte, error) {
	state, chain, join, err := tj.Client.SendJoin(ctx, server, roomID, eventID, event)
	if err != nil {
		return nil, nil, nil, err
	}
	state, chain = tj.tamper(state, chain)
	return state, chain, join, nil
}

// TestJoin_BadSendJoinAnswer: a send_join answer that does not verify is
// not persisted, and the error says why.
func TestJoin_BadSendJoinAnswer(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx := testContext(t)
	alice, bob := a.User("alice"), b.User("bob")
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	typeOf := func(raw []byte) string {
		tree, err := rooms.ParseJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		typ, _ := tree.(map[string]any)["type"].(string)
		return typ
	}
	without := func(evs [][]byte, typ string) [][]byte {
		var out [][]byte
		for _, ev := range evs {
			if typeOf(ev) != typ {
				out = append(out, ev)
			}
		}
		return out
	}
	cases := []struct {
		name   string
		tamper func(state, chain [][]byte) ([][]byte, [][]byte)
		want   string
	}{
		{"no create event", func(s, c [][]byte) ([][]byte, [][]byte) {
			return without(s, "m.room.create"), without(c, "m.room.create")
		}, "no create event"},
		{"no power levels", func(s, c [][]byte) ([][]byte, [][]byte) {
			return without(s, "m.room.power_levels"), without(c, "m.room.power_levels")
		}, "fails auth"},
		{"altered join rules", func(s, c [][]byte) ([][]byte, [][]byte) {
			alter := func(evs [][]byte) [][]byte {
				out := make([][]byte, len(evs))
				for i, ev := range evs {
					out[i] = ev
					if typeOf(ev) == "m.room.join_rules" {
						out[i] = []byte(strings.Replace(string(ev), `"join_rule":"public"`, `"join_rule":"invite"`, 1))
					}
				}
				return out
			}
			return alter(s), alter(c)
		}, "signature"},
		{"not JSON", func(s, c [][]byte) ([][]byte, [][]byte) {
			return append(s, []byte(`{"type":`)), c
		}, "state event"},
	}
	for _, tc := range cases {
		eng := &homeserver.Engine{
			ServerName: b.Name, Signer: b.Engine.Signer, Store: b.DB, Keys: b.Ring,
			Remote: tamperingJoiner{Client: b.Client, tamper: tc.tamper}, Logger: testLogger(t, b.Name),
		}
		_, err := eng.JoinRoom(ctx, roomID, bob, []string{a.Name})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", tc.name, err, tc.want)
		}
		if _, err := b.DB.Room(ctx, roomID); err == nil {
			t.Fatalf("%s: B holds the room", tc.name)
		}
	}
	// The honest answer still works.
	if _, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name}); err != nil {
		t.Fatal(err)
	}
	requireSameState(t, roomID, a, b)
}
