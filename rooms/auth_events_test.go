package rooms_test

import (
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

// authList returns the auth events a message by sender would list in r
// (the create event only where the version lists it), plus extra.
func authList(r *roomstest.Room, sender string, extra ...*rooms.Event) []*rooms.Event {
	var out []*rooms.Event
	if r.Version.CreateInAuthEvents {
		out = append(out, r.Create())
	}
	out = append(out, r.StateEvent("m.room.power_levels", ""), r.StateEvent("m.room.member", sender))
	return append(out, extra...)
}

func messageWithAuth(r *roomstest.Room, sender string, auth []*rooms.Event) *rooms.Event {
	s := roomstest.Message(sender, "hello")
	s.AuthEvents = ids(auth...)
	return r.Build(s)
}

// v10 2.1 / v12 3.1: no two auth events for one (type, state_key).
func TestAuthEvents_2_1_Duplicates(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		oldPL := r.StateEvent("m.room.power_levels", "")
		setUser(r, bob, 10)
		ok := messageWithAuth(r, alice, authList(r, alice))
		if err := rooms.CheckAuthEvents(ok, r.AuthEventsOf(ok), r.Create(), nil); err != nil {
			t.Fatalf("message with the selected auth events: %v", err)
		}
		auth := authList(r, alice, oldPL)
		ev := messageWithAuth(r, alice, auth)
		wantAuthError(t, ev, rooms.CheckAuthEvents(ev, auth, r.Create(), nil), "auth_events", `two auth events for (m.room.power_levels, "")`)
		// The same ID listed twice is a duplicate too.
		twice := messageWithAuth(r, alice, authList(r, alice, r.StateEvent("m.room.member", alice)))
		wantAuthError(t, twice, rooms.CheckAuthEvents(twice, authList(r, alice), r.Create(), nil), "auth_events", "listed twice")
	})
}

// v10 2.2 / v12 3.2: every auth event is one the selection picks; in
// version 12 the create event is never picked.
func TestAuthEvents_2_2_NotSelected(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		auth := authList(r, alice, r.StateEvent("m.room.join_rules", ""))
		ev := messageWithAuth(r, alice, auth)
		wantAuthError(t, ev, rooms.CheckAuthEvents(ev, auth, r.Create(), nil), "auth_events", "is not one the auth events selection picks")
		// A join does select the join rules.
		join := r.Build(roomstest.Member(bob, bob, "join"))
		if err := rooms.CheckAuthEvents(join, r.AuthEventsOf(join), r.Create(), nil); err != nil {
			t.Fatalf("join listing the join rules: %v", err)
		}
	})
	t.Run("v12 create listed", func(t *testing.T) {
		r := newRoom(t, version(t, "12"), roomstest.Options{})
		auth := append([]*rooms.Event{r.Create()}, authList(r, alice)...)
		ev := messageWithAuth(r, alice, auth)
		wantAuthError(t, ev, rooms.CheckAuthEvents(ev, auth, r.Create(), nil), "auth_events", "create event must not be listed")
	})
}

// v10 2.3 / v12 3.3: no rejected auth events.
func TestAuthEvents_2_3_Rejected(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		ev := r.Build(roomstest.Message(alice, "hi"))
		pl := r.StateEvent("m.room.power_levels", "")
		notPL := func(id string) bool { return id == "$some-other-event" }
		if err := rooms.CheckAuthEvents(ev, r.AuthEventsOf(ev), r.Create(), notPL); err != nil {
			t.Fatalf("no rejected auth event: %v", err)
		}
		isPL := func(id string) bool { return id == pl.EventID() }
		wantAuthError(t, ev, rooms.CheckAuthEvents(ev, r.AuthEventsOf(ev), r.Create(), isPL), "auth_events", "was rejected")
	})
}

// v10 2.4: the create event is among the auth events.
func TestAuthEvents_v10_2_4_CreateMissing(t *testing.T) {
	r := newRoom(t, version(t, "10"), roomstest.Options{})
	auth := []*rooms.Event{r.StateEvent("m.room.power_levels", ""), r.StateEvent("m.room.member", alice)}
	ev := messageWithAuth(r, alice, auth)
	wantAuthError(t, ev, rooms.CheckAuthEvents(ev, auth, nil, nil), "auth_events", "no m.room.create event among the auth events")
	ok := r.Build(roomstest.Message(alice, "hi"))
	if err := rooms.CheckAuthEvents(ok, r.AuthEventsOf(ok), nil, nil); err != nil {
		t.Fatalf("create listed, none passed separately: %v", err)
	}
	// A create passed separately must be the one listed.
	other := newRoom(t, version(t, "10"), roomstest.Options{RoomID: "!other:a.test"})
	wantAuthError(t, ok, rooms.CheckAuthEvents(ok, r.AuthEventsOf(ok), other.Create(), nil), "auth_events", "is not the room's")
}

// v10 2.5 / v12 3.5: every auth event belongs to the event's room.
func TestAuthEvents_2_5_RoomMismatch(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		other := newRoom(t, v, roomstest.Options{Creator: ann, RoomID: "!other:a.test"})
		if other.ID == r.ID {
			t.Fatal("the two rooms share an ID")
		}
		var auth []*rooms.Event
		if v.CreateInAuthEvents {
			auth = append(auth, r.Create())
		}
		auth = append(auth, other.StateEvent("m.room.power_levels", ""), r.StateEvent("m.room.member", alice))
		ev := messageWithAuth(r, alice, auth)
		wantAuthError(t, ev, rooms.CheckAuthEvents(ev, auth, r.Create(), nil), "auth_events", "belongs to room "+other.ID)
	})
}

// v12 2: the room ID names an accepted create event, passed separately.
func TestAuthEvents_v12_2_RoomIDNamesCreate(t *testing.T) {
	r := newRoom(t, version(t, "12"), roomstest.Options{})
	other := newRoom(t, version(t, "12"), roomstest.Options{Creator: bob})
	ev := r.Build(roomstest.Message(alice, "hi"))
	auth := r.AuthEventsOf(ev)
	if err := rooms.CheckAuthEvents(ev, auth, r.Create(), nil); err != nil {
		t.Fatalf("the room's create: %v", err)
	}
	wantAuthError(t, ev, rooms.CheckAuthEvents(ev, auth, other.Create(), nil), "room_id", "does not name the create event")
	wantAuthError(t, ev, rooms.CheckAuthEvents(ev, auth, nil, nil), "room_id", "create event was not supplied")
	createRejected := func(id string) bool { return id == r.Create().EventID() }
	wantAuthError(t, ev, rooms.CheckAuthEvents(ev, auth, r.Create(), createRejected), "room_id", "was rejected")
	// CheckAuth applies the same rule to the create event in the state.
	state := r.State()
	state[rooms.CreateTuple] = other.Create()
	wantAuthError(t, ev, rooms.CheckAuth(ev, state), "room_id", "is not that of the room's create event")
	delete(state, rooms.CreateTuple)
	wantAuthError(t, ev, rooms.CheckAuth(ev, state), "auth_events", "no m.room.create event")
}

// CheckAuthEvents needs every listed auth event and nothing else.
func TestAuthEvents_SuppliedMatchListed(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		ev := r.Build(roomstest.Message(alice, "hi"))
		auth := r.AuthEventsOf(ev)
		wantAuthError(t, ev, rooms.CheckAuthEvents(ev, auth[1:], r.Create(), nil), "auth_events", "is missing")
		extra := append(auth, r.StateEvent("m.room.join_rules", ""))
		wantAuthError(t, ev, rooms.CheckAuthEvents(ev, extra, r.Create(), nil), "auth_events", "does not list")
	})
}

// An auth event that is not a state event matches no selected pair.
func TestAuthEvents_2_2_NonStateEntry(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		msg := r.SendMessage(alice, "first")
		auth := authList(r, alice, msg)
		ev := messageWithAuth(r, alice, auth)
		wantAuthError(t, ev, rooms.CheckAuthEvents(ev, auth, r.Create(), nil), "auth_events", "is not a state event")
	})
}
