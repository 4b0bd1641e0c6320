package homeserver

import (
	"context"
	"reflect"
	"slices"

	"github.com/ferry-matrix/ferry/rooms"
)

// joinedCache remembers the servers with a joined member under one
// current state of a room, so that local sends, which do not change
// membership, do not ask the store again for every event.
type joinedCache struct {
	// state is the current-state map the servers were read under: the
	// head replaces that map (never edits it) whenever state changes.
	// Holding it (not just its address) keeps the address from being
	// reused by another map.
	state   rooms.StateMap
	entries int
	servers []string
}

// joinedServers returns the servers with a joined member in the room's
// current state (h.current), from the head's cache when that state has
// not changed since they were read. Call it with the room's lock held.
func (e *Engine) joinedServers(ctx context.Context, h *roomHead, roomID string) ([]string, error) {
	if c := h.joined; c != nil && sameMap(c.state, h.current) && c.entries == len(h.current) {
		return c.servers, nil
	}
	servers, err := e.Store.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	h.joined = &joinedCache{state: h.current, entries: len(h.current), servers: servers}
	return servers, nil
}

// acceptedLocal moves the head past a local event just committed. A
// local event names every forward extremity as a prev event (up to
// rooms.MaxPrevEvents), so it becomes the only one and nothing needs to be
// read back; otherwise the store decides, as for any accepted event.
func (e *Engine) acceptedLocal(ctx context.Context, h *roomHead, roomID string, ev *rooms.Event, newCurrent rooms.StateMap) {
	for _, x := range h.extremities {
		if !slices.Contains(ev.PrevEvents(), x) {
			e.accepted(ctx, h, roomID, newCurrent)
			return
		}
	}
	h.extremities = []string{ev.EventID()}
	h.current = newCurrent
}

// sameMap reports whether a and b are the same map (not equal contents).
func sameMap(a, b rooms.StateMap) bool {
	return a != nil && reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}
