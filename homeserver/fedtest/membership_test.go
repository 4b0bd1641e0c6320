package fedtest

import (
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

var (
	_ homeserver.Inviter = (*federation.Client)(nil)
	_ homeserver.Leaver  = (*federation.Client)(nil)
)

// TestInviteRejectJoinLeave: a user of A invites a user of B into an
// invite-only room; B countersigns and tells its host; the invitee
// rejects (make_leave / send_leave through A), is invited again, joins,
// talks, and leaves as an ordinary event. Both servers agree on the state
// at each step.
func TestInviteRejectJoinLeave(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			nodes := startNodes(t, 2)
			a, b := nodes[0], nodes[1]
			ctx := testContext(t)
			alice, bob := a.User("alice"), b.User("bob")
			registerUsers(t, b, bob)
			roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: version, Preset: homeserver.PresetPrivateChat})
			if err != nil {
				t.Fatal(err)
			}
			a.SetState(t, roomID, alice, "m.room.name", "", map[string]any{"name": "harbour"})

			invite, err := a.Engine.Invite(ctx, roomID, alice, bob)
			if err != nil {
				t.Fatal(err)
			}
			if len(rooms.Signatures(invite.Object(), b.Name)) == 0 {
				t.Fatalf("the invite on A lacks B's signature: %s", invite.JSON())
			}
			if m := a.membership(t, roomID, bob); m != "invite" {
				t.Fatalf("A: bob's membership is %q", m)
			}
			requireRoomStatus(t, b, roomID, store.RoomInvited)
			requireHostInvite(t, b, roomID, invite.EventID())

			// Reject through A.
			leave, err := b.Engine.LeaveRoom(ctx, roomID, bob, []string{a.Name})
			if err != nil {
				t.Fatal(err)
			}
			a.WaitEvent(t, leave.EventID())
			if m := a.membership(t, roomID, bob); m != "leave" {
				t.Fatalf("A: bob's membership after rejecting is %q", m)
			}
			requireRoomStatus(t, b, roomID, store.RoomLeft)

			// Invited again, bob joins.
			if _, err := a.Engine.Invite(ctx, roomID, alice, bob); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name}); err != nil {
				t.Fatal(err)
			}
			requireRoomStatus(t, b, roomID, store.RoomJoined)
			requireSameState(t, roomID, a, b)
			hi := b.Say(t, roomID, bob, "thanks for the invite")
			b.Flush(t)
			a.WaitEvent(t, hi)

			// Leaving a room we are in is an ordinary event.
			bye, err := b.Engine.LeaveRoom(ctx, roomID, bob, nil)
			if err != nil {
				t.Fatal(err)
			}
			b.Flush(t)
			a.WaitEvent(t, bye.EventID())
			if m := a.membership(t, roomID, bob); m != "leave" {
				t.Fatalf("A: bob's membership after leaving is %q", m)
			}
			requireSameState(t, roomID, a, b)

			// B holds the room but has nobody in it: a new invite is news
			// for its host, and rejecting it goes through A.
			again, err := a.Engine.Invite(ctx, roomID, alice, bob)
			if err != nil {
				t.Fatal(err)
			}
			requireHostInvite(t, b, roomID, again.EventID())
			requireRoomStatus(t, b, roomID, store.RoomInvited)
			if _, err := b.Engine.LeaveRoom(ctx, roomID, bob, []string{a.Name}); err != nil {
				t.Fatal(err)
			}
			if m := a.membership(t, roomID, bob); m != "leave" {
				t.Fatalf("A: bob's membership after rejecting again is %q", m)
			}
		})
	}
}

// TestServeInvite_BadInputs: PUT /v2/invite refuses what the spec says it
// should.
func TestServeInvite_BadInputs(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := testContext(t)
	alice := a.User("alice")
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPrivateChat})
	if err != nil {
		t.Fatal(err)
	}
	v, err := rooms.LookupVersion("12")
	if err != nil {
		t.Fatal(err)
	}
	state, err := a.DB.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	eventJSON := func(id string) []byte {
		se, err := a.DB.Event(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return se.Event.JSON()
	}
	createJSON := eventJSON(state[store.StateKey{Type: "m.room.create"}])
	inviteOf := func(t *testing.T, invitee string) *rooms.Event {
		t.Helper()
		ev, err := rooms.BuildEvent(v, rooms.EventTemplate{
			Type: "m.room.member", StateKey: rooms.StringPtr(invitee), Sender: alice, RoomID: roomID,
			Content:    map[string]any{"membership": "invite"},
			PrevEvents: []string{state[store.StateKey{Type: "m.room.history_visibility"}]},
			AuthEvents: []string{state[store.StateKey{Type: "m.room.power_levels"}], state[store.StateKey{Type: "m.room.member", StateKey: alice}]},
			Depth:      6, OriginServerTS: 1,
		}, a.Engine.Signer)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	wantStatus := func(t *testing.T, err error, status int, code string) {
		t.Helper()
		var he *federation.HTTPError
		if !errors.As(err, &he) || he.Status != status || he.ErrCode != code {
			t.Fatalf("got %v, want %d %s", err, status, code)
		}
	}
	bob := b.User("bob")
	registerUsers(t, b, bob)
	t.Run("invitee not registered", func(t *testing.T) {
		ev := inviteOf(t, b.User("nobody"))
		_, err := a.Client.SendInvite(ctx, b.Name, roomID, ev.EventID(), "12", ev.JSON(), [][]byte{createJSON})
		wantStatus(t, err, http.StatusForbidden, "M_FORBIDDEN")
		if _, err := b.DB.Event(ctx, ev.EventID()); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the refused invite was stored: %v", err)
		}
	})
	t.Run("unsupported room version", func(t *testing.T) {
		ev := inviteOf(t, bob)
		_, err := a.Client.SendInvite(ctx, b.Name, roomID, ev.EventID(), "1", ev.JSON(), [][]byte{createJSON})
		wantStatus(t, err, http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION")
	})
	t.Run("invitee of another server", func(t *testing.T) {
		ev := inviteOf(t, a.User("carol"))
		_, err := a.Client.SendInvite(ctx, b.Name, roomID, ev.EventID(), "12", ev.JSON(), [][]byte{createJSON})
		wantStatus(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("no create event", func(t *testing.T) {
		ev := inviteOf(t, bob)
		_, err := a.Client.SendInvite(ctx, b.Name, roomID, ev.EventID(), "12", ev.JSON(), nil)
		wantStatus(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("too much room state", func(t *testing.T) {
		ev := inviteOf(t, bob)
		state := make([][]byte, 51)
		for i := range state {
			state[i] = createJSON
		}
		_, err := a.Client.SendInvite(ctx, b.Name, roomID, ev.EventID(), "12", ev.JSON(), state)
		wantStatus(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("sent by another server", func(t *testing.T) {
		ev := inviteOf(t, bob)
		_, err := c.Client.SendInvite(ctx, b.Name, roomID, ev.EventID(), "12", ev.JSON(), [][]byte{createJSON})
		wantStatus(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("accepted", func(t *testing.T) {
		ev := inviteOf(t, bob)
		signed, err := a.Client.SendInvite(ctx, b.Name, roomID, ev.EventID(), "12", ev.JSON(), [][]byte{createJSON})
		if err != nil {
			t.Fatal(err)
		}
		got, err := rooms.ParseEvent(v, signed)
		if err != nil || got.EventID() != ev.EventID() || len(rooms.Signatures(got.Object(), b.Name)) == 0 {
			t.Fatalf("countersigned invite %s, %v", signed, err)
		}
		requireHostInvite(t, b, roomID, ev.EventID())
	})
}

// requireRoomStatus fails unless the server's relation to the room is
// status.
func requireRoomStatus(t *testing.T, n *node, roomID, status string) {
	t.Helper()
	r, err := n.DB.Room(testContext(t), roomID)
	if err != nil {
		t.Fatalf("%s: room %s: %v", n.Name, roomID, err)
	}
	if r.Status != status {
		t.Fatalf("%s: room %s is %q, want %q", n.Name, roomID, r.Status, status)
	}
}

// requireHostInvite fails unless the server's host log has the invite.
func requireHostInvite(t *testing.T, n *node, roomID, eventID string) {
	t.Helper()
	recs, err := n.DB.ReadHostLog(testContext(t), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Kind != store.HostInvite || r.RoomID != roomID {
			continue
		}
		tree, err := rooms.ParseJSON(r.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := rooms.NewEventFromObject(mustVersion(t, roomID, n), tree.(map[string]any)); err == nil && ev.EventID() == eventID {
			return
		}
	}
	t.Fatalf("%s: no invite %s in the host log", n.Name, eventID)
}

func mustVersion(t *testing.T, roomID string, n *node) rooms.Version {
	t.Helper()
	r, err := n.DB.Room(testContext(t), roomID)
	if err != nil {
		t.Fatal(err)
	}
	v, err := rooms.LookupVersion(r.Version)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var _ homeserver.Knocker = (*federation.Client)(nil)

// TestKnock: a user of B knocks on A's room (join rule knock), retracts
// the knock (make_leave / send_leave), knocks again, is invited and
// joins.
func TestKnock(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			nodes := startNodes(t, 2)
			a, b := nodes[0], nodes[1]
			ctx := testContext(t)
			alice, bob := a.User("alice"), b.User("bob")
			registerUsers(t, b, bob)
			roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: version, Preset: homeserver.PresetPrivateChat})
			if err != nil {
				t.Fatal(err)
			}
			// Knocking on an invite-only room is refused.
			if _, err := b.Engine.KnockRoom(ctx, roomID, bob, "", []string{a.Name}); err == nil {
				t.Fatal("knock on an invite-only room succeeded")
			}
			a.SetState(t, roomID, alice, "m.room.join_rules", "", map[string]any{"join_rule": "knock"})

			knock, err := b.Engine.KnockRoom(ctx, roomID, bob, "let me in", []string{a.Name})
			if err != nil {
				t.Fatal(err)
			}
			a.WaitEvent(t, knock.EventID())
			if m := a.membership(t, roomID, bob); m != "knock" {
				t.Fatalf("A: bob's membership is %q", m)
			}
			requireRoomStatus(t, b, roomID, homeserver.RoomKnocked)

			if _, err := b.Engine.LeaveRoom(ctx, roomID, bob, []string{a.Name}); err != nil {
				t.Fatal(err)
			}
			if m := a.membership(t, roomID, bob); m != "leave" {
				t.Fatalf("A: bob's membership after retracting is %q", m)
			}

			if _, err := b.Engine.KnockRoom(ctx, roomID, bob, "", []string{a.Name}); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Engine.Invite(ctx, roomID, alice, bob); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name}); err != nil {
				t.Fatal(err)
			}
			requireSameState(t, roomID, a, b)
		})
	}
}

// TestModerationAcrossServers: power levels, kick, ban and unban are
// ordinary state events that both servers apply the same way.
func TestModerationAcrossServers(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx := testContext(t)
	alice, bob := a.User("alice"), b.User("bob")
	registerUsers(t, b, bob)
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name}); err != nil {
		t.Fatal(err)
	}
	topic := func(n *node, sender, text string) error {
		_, err := n.Engine.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.topic", StateKey: rooms.StringPtr(""), Sender: sender, Content: map[string]any{"topic": text}})
		return err
	}
	if err := topic(b, bob, "mine"); err == nil {
		t.Fatal("bob set the topic without power")
	}
	// Power to bob.
	pl := a.SetState(t, roomID, alice, "m.room.power_levels", "", map[string]any{"users": map[string]any{bob: 50}})
	a.Flush(t)
	b.WaitEvent(t, pl)
	if err := topic(b, bob, "mine"); err != nil {
		t.Fatal(err)
	}
	b.Flush(t)
	requireSameState(t, roomID, a, b)

	// Kick: bob can no longer speak.
	kick := a.SetState(t, roomID, alice, "m.room.member", bob, map[string]any{"membership": "leave", "reason": "out"})
	a.Flush(t)
	b.WaitEvent(t, kick)
	if _, err := b.Engine.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.message", Sender: bob, Content: map[string]any{"body": "hey"}}); err == nil {
		t.Fatal("a kicked user spoke")
	}
	// B holds the room with nobody of its own in it: it is no resident.
	var he *federation.HTTPError
	if _, _, err := a.Client.MakeJoin(ctx, b.Name, roomID, a.User("zed"), rooms.SupportedVersionIDs()); !errors.As(err, &he) || he.Status != http.StatusNotFound {
		t.Fatalf("make_join on a server with nobody in the room: %v", err)
	}
	requireSameState(t, roomID, a, b)

	// Ban: A no longer counts B in the room, so B learns of it only when
	// it is back; the ban holds on A.
	a.SetState(t, roomID, alice, "m.room.member", bob, map[string]any{"membership": "ban"})
	if m := a.membership(t, roomID, bob); m != "ban" {
		t.Fatalf("A: bob's membership is %q", m)
	}
	if _, _, err := b.Client.MakeJoin(ctx, a.Name, roomID, bob, rooms.SupportedVersionIDs()); err == nil {
		t.Fatal("make_join for a banned user succeeded")
	}
	// Unban: bob may join again. B still holds the room but none of its
	// users is in it, so the join goes through A (make_join, send_join)
	// and B takes it in, fetching the ban and the unban it missed.
	a.SetState(t, roomID, alice, "m.room.member", bob, map[string]any{"membership": "leave"})
	if _, _, err := b.Client.MakeJoin(ctx, a.Name, roomID, bob, rooms.SupportedVersionIDs()); err != nil {
		t.Fatalf("make_join after the unban: %v", err)
	}
	rejoin, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name})
	if err != nil {
		t.Fatal(err)
	}
	b.Flush(t)
	a.WaitEvent(t, rejoin.EventID())
	if m := a.membership(t, roomID, bob); m != "join" {
		t.Fatalf("A: bob's membership after rejoining is %q", m)
	}
	welcome := a.Say(t, roomID, alice, "welcome back")
	a.Flush(t)
	b.WaitEvent(t, welcome)
	requireSameState(t, roomID, a, b)
}

// TestInvite_RoomMovesMeanwhile: the room is not locked while the
// invitee's server countersigns; an event sent meanwhile makes the invite
// follow older events, and it is judged like a received event and still
// reaches the other servers in the room.
func TestInvite_RoomMovesMeanwhile(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := testContext(t)
	alice, bob, carol := a.User("alice"), b.User("bob"), c.User("carol")
	registerUsers(t, b, bob)
	registerUsers(t, c, carol)
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Engine.JoinRoom(ctx, roomID, carol, []string{a.Name}); err != nil {
		t.Fatal(err)
	}
	var meanwhile string
	a.Remote.BeforeInvite(func() { meanwhile = a.Say(t, roomID, alice, "while bob's server thinks") })
	invite, err := a.Engine.Invite(ctx, roomID, alice, bob)
	if err != nil {
		t.Fatal(err)
	}
	a.Remote.BeforeInvite(nil)
	if meanwhile == "" || slices.Contains(invite.PrevEvents(), meanwhile) {
		t.Fatalf("the invite %v should not follow %s", invite.PrevEvents(), meanwhile)
	}
	if m := a.membership(t, roomID, bob); m != "invite" {
		t.Fatalf("A: bob's membership is %q", m)
	}
	a.Flush(t)
	c.WaitEvent(t, invite.EventID())
	c.WaitEvent(t, meanwhile)
	requireSameState(t, roomID, a, c)
	requireHostInvite(t, b, roomID, invite.EventID())
}
