package homeserver

import (
	"context"
	"fmt"
	"maps"

	"github.com/ferry-matrix/ferry/rooms"
)

// roomHead is what the engine keeps in memory of a room it is in: the
// version, the forward extremities and the current state, as committed.
// It is read and changed only with the room's lock held; every write to
// the room goes through the engine, which updates or drops the head after
// it commits. current is never modified in place (state maps computed
// from it may share it); it is replaced.
type roomHead struct {
	v           rooms.Version
	extremities []string // sorted, as the store returns them
	current     rooms.StateMap
	// stage collects decisions while a transaction's PDUs are judged.
	stage *staged
	// joined caches the servers in the room under current (local_head.go).
	joined *joinedCache
	// after holds the states after recently accepted events
	// (ingest_states.go).
	after recentStates
	// resolved remembers resolutions by their inputs (ingest_states.go).
	resolved resolutionMemo
}

// head returns the head of a room we are in, loading it on first use, or
// nil when we are not in the room. Call it with the room's lock held.
func (e *Engine) head(ctx context.Context, roomID string) (*roomHead, error) {
	e.cacheMu.Lock()
	h := e.heads[roomID]
	e.cacheMu.Unlock()
	if h != nil {
		return h, nil
	}
	v, in, err := e.roomVersion(ctx, roomID)
	if err != nil || !in {
		return nil, err
	}
	exts, err := e.Store.ForwardExtremities(ctx, roomID)
	if err != nil {
		return nil, err
	}
	cur, err := e.Store.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	h = &roomHead{v: v, extremities: exts, current: toRooms(cur)}
	e.cacheMu.Lock()
	if e.heads == nil {
		e.heads = make(map[string]*roomHead)
	}
	e.heads[roomID] = h
	e.cacheMu.Unlock()
	return h, nil
}

// dropHead forgets a room's head; the next use reloads it from the store.
func (e *Engine) dropHead(roomID string) {
	e.cacheMu.Lock()
	delete(e.heads, roomID)
	e.cacheMu.Unlock()
}

// accepted moves the head past an accepted event: newCurrent is the
// current state it committed; the extremities are read back, as the store
// decides them (an event that an accepted event already follows does not
// become one).
func (e *Engine) accepted(ctx context.Context, h *roomHead, roomID string, newCurrent rooms.StateMap) {
	exts, err := e.Store.ForwardExtremities(ctx, roomID)
	if err != nil {
		e.Logger.Error().Err(err).Str(fieldRoomID, roomID).Msg("reading forward extremities back failed; reloading the room later")
		e.dropHead(roomID)
		return
	}
	h.extremities = exts
	h.current = newCurrent
}

// aclAllows applies the server ACL of a state to server.
func (e *Engine) aclAllows(ctx context.Context, state rooms.StateMap, server string) (bool, error) {
	id, ok := state[rooms.StateTuple(aclTuple)]
	if !ok {
		return true, nil
	}
	se, err := e.storedEvent(ctx, id)
	if err != nil {
		return false, fmt.Errorf("server ACL event: %w", err)
	}
	return ACLAllows(se.Event.Content(), server), nil
}

// withEvent returns state with a state event applied (a copy).
func withEvent(state rooms.StateMap, ev *rooms.Event) rooms.StateMap {
	k, ok := rooms.StateTupleOf(ev)
	if !ok {
		return state
	}
	out := maps.Clone(state)
	out[k] = ev.EventID()
	return out
}
