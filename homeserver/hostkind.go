package homeserver

import (
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// hostKindOf is the host stream kind of an event accepted into a room: a
// knock gets its own kind, so that the host sees at a glance that someone
// waits for an invite; everything else is an event.
func hostKindOf(ev *rooms.Event) string {
	if ev.Type() == "m.room.member" && ev.Membership() == "knock" {
		return store.HostKnock
	}
	return store.HostEvent
}
