package homeserver

import (
	"context"
	"fmt"
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
	// acl is the content of the server ACL in that state, nil for none.
	acl map[string]any
}

// joinedServers returns what the head knows of the servers in the room
// under its current state (h.current): read again only when that state
// changed since they were last read. Call it with the room's lock held.
func (e *Engine) joinedServers(ctx context.Context, h *roomHead, roomID string) (*joinedCache, error) {
	if c := h.joined; c != nil && sameMap(c.state, h.current) && c.entries == len(h.current) {
		return c, nil
	}
	servers, err := e.Store.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var acl map[string]any
	if id, ok := h.current[rooms.StateTuple(aclTuple)]; ok {
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("server ACL event: %w", err)
		}
		acl = se.Event.Content()
	}
	c := &joinedCache{state: h.current, entries: len(h.current), servers: servers, acl: acl}
	h.joined = c
	return c, nil
}

// localDestinations returns the servers a local event sent under the
// room's current state goes to: those with a joined member, not us,
// admitted by the room's server ACL and DestinationAllowed.
func (e *Engine) localDestinations(c *joinedCache) []string {
	return e.allowedDestinations(c.servers, c.acl)
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
	h.after.put(ev.EventID(), newCurrent)
}

// sameMap reports whether a and b are the same map (not equal contents).
func sameMap(a, b rooms.StateMap) bool {
	return a != nil && reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}
