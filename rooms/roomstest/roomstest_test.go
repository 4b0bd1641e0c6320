package roomstest_test

import (
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

func versions(t testing.TB) []rooms.Version {
	t.Helper()
	var out []rooms.Version
	for _, id := range []string{"10", "12"} {
		v, err := rooms.LookupVersion(id)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// TestNewRoom_EventsPassAuthAndSignatures checks that a built room is a
// valid room: every event verifies and passes auth against its own auth
// events and against the state before it.
func TestNewRoom_EventsPassAuthAndSignatures(t *testing.T) {
	for _, v := range versions(t) {
		t.Run(v.ID, func(t *testing.T) {
			r := roomstest.NewRoom(t, v, roomstest.Options{})
			r.Join(roomstest.Bob)
			r.SendMessage(roomstest.Bob, "hello")
			r.SetPowerLevels(roomstest.Alice, roomstest.WithUserLevel(r.PowerLevelsContent(), roomstest.Bob, 50))
			r.Send(roomstest.RestrictedJoin(roomstest.Carol, roomstest.Bob))
			var prevState map[rooms.StateTuple]*rooms.Event
			for i, ev := range r.Events() {
				if err := rooms.VerifyEventSignatures(ev, roomstest.Keys{}); err != nil {
					t.Errorf("event %d %s: %v", i, ev.Type(), err)
				}
				if err := rooms.CheckAuthEvents(ev, r.AuthEventsOf(ev), r.Create(), nil); err != nil {
					t.Errorf("event %d %s against its auth events: %v", i, ev.Type(), err)
				}
				if i > 0 {
					if err := rooms.CheckAuth(ev, prevState); err != nil {
						t.Errorf("event %d %s against the state before it: %v", i, ev.Type(), err)
					}
				}
				prevState = r.StateAfter(ev.EventID())
			}
			if got := len(r.Extremities()); got != 1 {
				t.Errorf("extremities = %d, want 1", got)
			}
			if v.RoomIDs == rooms.RoomIDFromCreate && r.ID != r.Create().RoomID() {
				t.Errorf("room ID %s is not the create event's %s", r.ID, r.Create().RoomID())
			}
		})
	}
}

// TestRoom_Fork checks that a fork builds on the earlier state and leaves
// the original room alone, and that a merge lists both branches.
func TestRoom_Fork(t *testing.T) {
	v := versions(t)[0]
	r := roomstest.NewRoom(t, v, roomstest.Options{})
	base := r.Join(roomstest.Bob)
	r.SendState(roomstest.Alice, "m.room.topic", "", map[string]any{"topic": "main"})
	fork := r.Fork(base.EventID())
	side := fork.SendState(roomstest.Bob, "m.room.name", "", map[string]any{"name": "side"})
	if got := side.PrevEvents(); len(got) != 1 || got[0] != base.EventID() {
		t.Fatalf("fork event prev_events = %v, want [%s]", got, base.EventID())
	}
	if r.StateEvent("m.room.name", "") != nil {
		t.Error("the fork's state leaked into the original room")
	}
	if fork.StateEvent("m.room.topic", "") != nil {
		t.Error("the fork sees state added after its fork point")
	}
	merged := r.At(append(r.Extremities(), side.EventID()), r.State())
	m := merged.SendMessage(roomstest.Alice, "merge")
	if len(m.PrevEvents()) != 2 {
		t.Errorf("merge prev_events = %v, want two", m.PrevEvents())
	}
	if r.Event(side.EventID()) == nil {
		t.Error("fork events are not in the shared registry")
	}
}
