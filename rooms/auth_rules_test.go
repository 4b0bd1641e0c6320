package rooms_test

import (
	"reflect"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

// v10 5 / v12 6: only joined users send non-membership events.
func TestAuthSender_5_Joined(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		r.Join(bob)
		wantAllowed(t, r, r.Build(roomstest.Message(bob, "hi")))
		wantRejected(t, r, r.Build(roomstest.Message(carol, "hi")), "sender", "sender is not joined to the room (membership leave)")
		r.Invite(alice, carol)
		wantRejected(t, r, r.Build(roomstest.Message(carol, "hi")), "sender", "(membership invite)")
		r.Leave(bob)
		wantRejected(t, r, r.Build(roomstest.Message(bob, "hi")), "sender", "(membership leave)")
	})
}

// v10 6 / v12 7: m.room.third_party_invite needs the invite level.
func TestAuthThirdPartyInviteEvent_6(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		r.Join(bob)
		content := roomstest.ThirdPartyInviteContent(roomstest.IdentityKey())
		wantAllowed(t, r, r.Build(roomstest.State(bob, "m.room.third_party_invite", "tok", content)))
		setLevels(r, func(c map[string]any) { c["invite"] = int64(50) })
		wantRejected(t, r, r.Build(roomstest.State(bob, "m.room.third_party_invite", "tok", content)), "third_party_invite", "below the invite level 50")
		wantAllowed(t, r, r.Build(roomstest.State(alice, "m.room.third_party_invite", "tok", content)))
	})
}

// v10 7 / v12 8: the event type's required power level.
func TestAuthRequiredPowerLevel_7(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		r.Join(bob)
		name := roomstest.State(bob, "m.room.name", "", map[string]any{"name": "x"})
		wantRejected(t, r, r.Build(name), "power_level", "below the 50 required for state event m.room.name")
		// state_default for unlisted state types.
		topicless := roomstest.State(bob, "org.example.custom", "", map[string]any{})
		wantRejected(t, r, r.Build(topicless), "power_level", "below the 50 required")
		setUser(r, bob, 50)
		wantAllowed(t, r, r.Build(name))
		wantAllowed(t, r, r.Build(topicless))
		// events_default for messages.
		setLevels(r, func(c map[string]any) { c["events_default"] = int64(60) })
		wantRejected(t, r, r.Build(roomstest.Message(bob, "hi")), "power_level", "below the 60 required for event m.room.message")
		wantAllowed(t, r, r.Build(roomstest.Message(alice, "hi")))
	})
}

// v10 7 / v12 8 without a power-levels event: state_default is 50, the
// v10 creator has 100 and the v12 creator infinite power.
func TestAuthRequiredPowerLevel_7_NoPowerLevels(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{Minimal: true})
		wantAllowed(t, r, r.Build(roomstest.State(alice, "m.room.name", "", map[string]any{"name": "x"})))
		wantAllowed(t, r, r.Build(roomstest.Message(alice, "hi")))
	})
}

// v10 8 / v12 9: state keys starting with '@' belong to that user.
func TestAuthStateKey_8_UserKeys(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		r.Join(bob)
		setLevels(r, func(c map[string]any) { c["state_default"] = int64(0) })
		wantAllowed(t, r, r.Build(roomstest.State(bob, "org.example.profile", bob, map[string]any{})))
		wantRejected(t, r, r.Build(roomstest.State(bob, "org.example.profile", carol, map[string]any{})), "state_key", `state key "@carol:c.test" starts with '@' and is not the sender`)
		wantAllowed(t, r, r.Build(roomstest.State(bob, "org.example.profile", "carol", map[string]any{})))
	})
}

// v12: new rooms give m.room.tombstone a level above every admin, so only
// creators can upgrade; in v10 an admin at 100 can.
func TestAuthTombstone_DefaultLevel(t *testing.T) {
	tombstone := func(sender string) roomstest.Spec {
		return roomstest.State(sender, "m.room.tombstone", "", map[string]any{"body": "moved", "replacement_room": "!new"})
	}
	r12 := newRoom(t, version(t, "12"), roomstest.Options{})
	r12.Join(bob)
	setUser(r12, bob, 100)
	wantRejected(t, r12, r12.Build(tombstone(bob)), "power_level", "below the 150 required for state event m.room.tombstone")
	wantAllowed(t, r12, r12.Build(tombstone(alice)))

	r10 := newRoom(t, version(t, "10"), roomstest.Options{})
	r10.Join(bob)
	setUser(r10, bob, 100)
	wantAllowed(t, r10, r10.Build(tombstone(bob)))
}

// Redactions are authorised like any event: the redact level plays no part
// in the auth rules, only events/events_default do.
func TestAuthRedaction_AuthorisedLikeAnyEvent(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		r.Join(bob)
		msg := r.SendMessage(alice, "hello")
		wantAllowed(t, r, r.Build(roomstest.Redaction(bob, msg.EventID())))
		setLevels(r, func(c map[string]any) { subMap(c, "events")["m.room.redaction"] = int64(50) })
		wantRejected(t, r, r.Build(roomstest.Redaction(bob, msg.EventID())), "power_level", "below the 50 required for event m.room.redaction")
	})
}

// Handling redactions: applied with the redact level, or from the target
// sender's own server.
func TestRedactionAllowed(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		r.Join(bob)
		r.Join(ann)
		byAlice := r.SendMessage(alice, "alice's")
		byBob := r.SendMessage(bob, "bob's")
		state := r.State()
		cases := []struct {
			name      string
			redaction *rooms.Event
			target    *rooms.Event
			want      bool
		}{
			{"below the redact level, other server", r.Send(roomstest.Redaction(bob, byAlice.EventID())), byAlice, false},
			{"below the redact level, same server", r.Send(roomstest.Redaction(ann, byAlice.EventID())), byAlice, true},
			{"own event", r.Send(roomstest.Redaction(bob, byBob.EventID())), byBob, true},
			{"at the redact level", r.Send(roomstest.Redaction(alice, byBob.EventID())), byBob, true},
			{"names another event", r.Send(roomstest.Redaction(alice, byAlice.EventID())), byBob, false},
			{"not a redaction", byAlice, byBob, false},
		}
		for _, tc := range cases {
			if got := rooms.RedactionAllowed(tc.redaction, tc.target, state); got != tc.want {
				t.Errorf("%s: RedactionAllowed = %v, want %v", tc.name, got, tc.want)
			}
		}
		setUser(r, bob, 50)
		if !rooms.RedactionAllowed(cases[0].redaction, byAlice, r.State()) {
			t.Error("a redaction by a user at the redact level is not applied")
		}
	})
}

// Auth events selection (server-server API).
func TestAuthSelection(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		var create []rooms.StateTuple
		if v.CreateInAuthEvents {
			create = []rooms.StateTuple{rooms.CreateTuple}
		}
		pl := rooms.StateTuple{Type: "m.room.power_levels"}
		jr := rooms.StateTuple{Type: "m.room.join_rules"}
		member := func(u string) rooms.StateTuple { return rooms.StateTuple{Type: "m.room.member", StateKey: u} }
		with := func(ts ...rooms.StateTuple) []rooms.StateTuple {
			return append(append([]rooms.StateTuple{}, create...), ts...)
		}
		signed := roomstest.ThirdPartySigned(t, carol, "tok", roomstest.IdentityKey())
		cases := []struct {
			name string
			spec roomstest.Spec
			want []rooms.StateTuple
		}{
			{"message", roomstest.Message(alice, "hi"), with(pl, member(alice))},
			{"state", roomstest.State(alice, "m.room.topic", "", nil), with(pl, member(alice))},
			{"join", roomstest.Member(bob, bob, "join"), with(pl, member(bob), jr)},
			{"invite", roomstest.Member(alice, bob, "invite"), with(pl, member(alice), member(bob), jr)},
			{"knock", roomstest.Member(bob, bob, "knock"), with(pl, member(bob), jr)},
			{"leave", roomstest.Member(bob, bob, "leave"), with(pl, member(bob))},
			{"kick", roomstest.Member(alice, bob, "leave"), with(pl, member(alice), member(bob))},
			{"ban", roomstest.Member(alice, bob, "ban"), with(pl, member(alice), member(bob))},
			{"third-party invite", roomstest.ThirdPartyInvite(alice, carol, signed), with(pl, member(alice), member(carol), jr, rooms.StateTuple{Type: "m.room.third_party_invite", StateKey: "tok"})},
			{"restricted join", roomstest.RestrictedJoin(bob, alice), with(pl, member(bob), jr, member(alice))},
		}
		for _, tc := range cases {
			ev := r.Build(tc.spec)
			if got := rooms.AuthSelection(ev); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s: AuthSelection = %v, want %v", tc.name, got, tc.want)
			}
		}
		if got := rooms.AuthSelection(r.Create()); len(got) != 0 {
			t.Errorf("create: AuthSelection = %v, want none", got)
		}
	})
}

func TestPowerLevelsFrom(t *testing.T) {
	t.Run("v10 without power levels", func(t *testing.T) {
		r := newRoom(t, version(t, "10"), roomstest.Options{Minimal: true})
		pl, err := rooms.PowerLevelsFrom(r.State())
		if err != nil {
			t.Fatal(err)
		}
		if n, inf := pl.UserLevel(alice); n != 100 || inf {
			t.Errorf("creator level = %d, %v; want 100", n, inf)
		}
		if n, _ := pl.UserLevel(bob); n != 0 {
			t.Errorf("other level = %d, want 0", n)
		}
		if pl.EventLevel("m.room.name", true) != 50 || pl.EventLevel("m.room.message", false) != 0 {
			t.Errorf("event levels %d/%d, want 50/0", pl.EventLevel("m.room.name", true), pl.EventLevel("m.room.message", false))
		}
		if pl.Exists || pl.Invite != 0 || pl.Ban != 50 || pl.Kick != 50 || pl.Redact != 50 {
			t.Errorf("defaults = %+v", pl)
		}
	})
	t.Run("v12 creators", func(t *testing.T) {
		r := newRoom(t, version(t, "12"), roomstest.Options{AdditionalCreators: []string{carol}})
		pl, err := rooms.PowerLevelsFrom(r.State())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{alice, carol} {
			if _, inf := pl.UserLevel(c); !inf || !pl.IsCreator(c) {
				t.Errorf("%s is not infinite", c)
			}
		}
		if n, inf := pl.UserLevel(bob); n != 0 || inf {
			t.Errorf("bob = %d, %v", n, inf)
		}
		if !pl.Exists || pl.EventLevel("m.room.tombstone", true) != 150 {
			t.Errorf("tombstone level = %d, want 150", pl.EventLevel("m.room.tombstone", true))
		}
	})
	t.Run("malformed", func(t *testing.T) {
		r := newRoom(t, version(t, "10"), roomstest.Options{})
		bad := r.Build(roomstest.PowerLevels(alice, map[string]any{"ban": "50"}))
		state := r.State()
		state[rooms.StateTuple{Type: "m.room.power_levels"}] = bad
		if _, err := rooms.PowerLevelsFrom(state); err == nil {
			t.Error("string ban level accepted")
		}
	})
}

func TestInitialPowerLevelsContent(t *testing.T) {
	for _, id := range []string{"10", "12"} {
		v := version(t, id)
		c := rooms.InitialPowerLevelsContent(v, alice)
		users := c["users"].(map[string]any)
		_, listed := users[alice]
		if listed != (v.Creators == rooms.CreatorFromContent) {
			t.Errorf("v%s: creator listed = %v", id, listed)
		}
		tomb := c["events"].(map[string]any)["m.room.tombstone"].(int64)
		if v.TombstoneAboveStateDefault && tomb <= c["state_default"].(int64) {
			t.Errorf("v%s: tombstone level %d is not above state_default", id, tomb)
		}
	}
}
