package homeserver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// Bounds of the history reads.
const (
	maxBackfill      = 100
	maxMissingEvents = 100
	defaultMissing   = 10
)

// checkServerInRoom refuses a read of roomID by origin unless we are in
// the room, its server ACL admits origin and origin has a joined member.
func (e *Engine) checkServerInRoom(ctx context.Context, origin, roomID string) error {
	_, in, err := e.roomVersion(ctx, roomID)
	if err != nil {
		return err
	}
	if !in {
		return notFound("room %s is not known here", roomID)
	}
	if ok, err := e.serverAllowed(ctx, roomID, origin); err != nil {
		return err
	} else if !ok {
		return forbidden("server %s is denied by the server ACL of %s", origin, roomID)
	}
	servers, err := e.Store.JoinedServers(ctx, roomID)
	if err != nil {
		return err
	}
	if !slices.Contains(servers, origin) && !e.partialServerKnown(ctx, roomID, origin) {
		return forbidden("server %s has no joined member in %s", origin, roomID)
	}
	return nil
}

// roomEvent returns a held, not rejected event of roomID.
func (e *Engine) roomEvent(ctx context.Context, roomID, eventID string) (*store.StoredEvent, error) {
	se, err := e.storedEvent(ctx, eventID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("event %s is not known here", eventID)
	}
	if err != nil {
		return nil, err
	}
	if se.Rejected || (roomID != "" && se.Event.RoomID() != roomID) {
		return nil, notFound("event %s is not known in room %s", eventID, roomID)
	}
	return se, nil
}

// Event answers GET /event/{eventId} for origin: the event's JSON (its
// redacted form if it was redacted). Soft-failed events are served.
func (e *Engine) Event(ctx context.Context, origin, eventID string) ([]byte, error) {
	se, err := e.roomEvent(ctx, "", eventID)
	if err != nil {
		return nil, err
	}
	if err := e.checkServerInRoom(ctx, origin, se.Event.RoomID()); err != nil {
		return nil, err
	}
	ev, err := e.visibleTo(ctx, origin, se)
	if err != nil {
		return nil, err
	}
	return ev.JSON(), nil
}

// Values of m.room.history_visibility.
const (
	visibilityWorldReadable = "world_readable"
	visibilityShared        = "shared"
	visibilityInvited       = "invited"
	visibilityJoined        = "joined"
)

// visibleTo returns a history event as origin may see it (client-server
// spec "History visibility", applied to a server's users): whole when the
// room's visibility at the event is world_readable or shared (origin has
// a joined member, which the caller checked), or when it is invited or
// joined and one of origin's users had that membership at the event (or
// the event is the membership of one of them); else its redacted form,
// which keeps the room's graph whole without its content.
func (e *Engine) visibleTo(ctx context.Context, origin string, se *store.StoredEvent) (*rooms.Event, error) {
	ev := se.Event
	if se.Outlier {
		return ev, nil
	}
	visibility := visibilityShared
	id, err := e.Store.StateEventBefore(ctx, ev.EventID(), store.StateKey{Type: "m.room.history_visibility"})
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrNoState):
	case err != nil:
		return nil, err
	default:
		hv, err := e.storedEvent(ctx, id)
		if err != nil {
			return nil, err
		}
		if v, ok := hv.Event.Content()["history_visibility"].(string); ok {
			visibility = v
		}
	}
	switch visibility {
	case visibilityInvited, visibilityJoined:
	default:
		// world_readable, shared, and values the spec does not define,
		// which clients treat as shared.
		return ev, nil
	}
	if sk, ok := ev.StateKey(); ok && ev.Type() == "m.room.member" && serverOf(sk) == origin {
		return ev, nil
	}
	state, err := e.Store.StateBefore(ctx, ev.EventID())
	if err != nil {
		return nil, err
	}
	for k, mid := range state {
		if k.Type != "m.room.member" || serverOf(k.StateKey) != origin {
			continue
		}
		m, err := e.storedEvent(ctx, mid)
		if err != nil {
			return nil, err
		}
		switch m.Event.Membership() {
		case "join":
			return ev, nil
		case "invite":
			if visibility == visibilityInvited {
				return ev, nil
			}
		}
	}
	if e.isPartialRoom(ctx, ev.RoomID()) {
		// The memberships that would show it may be among those the
		// partial state lacks.
		return nil, partialStateRefusal(ev.RoomID(), "event visibility")
	}
	return ev.Redacted(), nil
}

// serverOf returns the server part of a user ID, "" if it has none.
func serverOf(userID string) string {
	u, err := rooms.ParseUserID(userID)
	if err != nil {
		return ""
	}
	return string(u.Server())
}

// StateIDs answers GET /state_ids: the IDs of the state before eventID and
// of the auth chain of that state.
func (e *Engine) StateIDs(ctx context.Context, origin, roomID, eventID string) (stateIDs, authChainIDs []string, err error) {
	if err := e.checkServerInRoom(ctx, origin, roomID); err != nil {
		return nil, nil, err
	}
	if err := e.refuseIfPartial(ctx, roomID, "state"); err != nil {
		return nil, nil, err
	}
	if _, err := e.roomEvent(ctx, roomID, eventID); err != nil {
		return nil, nil, err
	}
	state, err := e.Store.StateBefore(ctx, eventID)
	if errors.Is(err, store.ErrNoState) {
		return nil, nil, notFound("the state at event %s is not known here", eventID)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("state_ids: %w", err)
	}
	stateIDs = make([]string, 0, len(state))
	for _, id := range state {
		stateIDs = append(stateIDs, id)
	}
	slices.Sort(stateIDs)
	chain, err := e.Store.AuthChain(ctx, stateIDs)
	if err != nil {
		return nil, nil, fmt.Errorf("state_ids: %w", err)
	}
	return stateIDs, chain, nil
}

// State answers GET /state: the events of the state before eventID and of
// its auth chain.
func (e *Engine) State(ctx context.Context, origin, roomID, eventID string) (state, authChain [][]byte, err error) {
	stateIDs, chainIDs, err := e.StateIDs(ctx, origin, roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	if state, err = e.eventsJSON(ctx, stateIDs); err != nil {
		return nil, nil, fmt.Errorf("state: %w", err)
	}
	if authChain, err = e.eventsJSON(ctx, chainIDs); err != nil {
		return nil, nil, fmt.Errorf("state: %w", err)
	}
	return state, authChain, nil
}

// EventAuth answers GET /event_auth: the full auth chain of eventID.
func (e *Engine) EventAuth(ctx context.Context, origin, roomID, eventID string) ([][]byte, error) {
	if err := e.checkServerInRoom(ctx, origin, roomID); err != nil {
		return nil, err
	}
	if _, err := e.roomEvent(ctx, roomID, eventID); err != nil {
		return nil, err
	}
	ids, err := e.Store.AuthChain(ctx, []string{eventID})
	if err != nil {
		return nil, fmt.Errorf("event_auth: %w", err)
	}
	return e.eventsJSON(ctx, ids)
}

// Backfill answers GET /backfill: up to limit events (at most 100), the
// from events and those before them.
func (e *Engine) Backfill(ctx context.Context, origin, roomID string, from []string, limit int) ([][]byte, error) {
	if err := e.checkServerInRoom(ctx, origin, roomID); err != nil {
		return nil, err
	}
	if len(from) == 0 {
		return nil, badRequest("backfill: at least one v is required")
	}
	if err := e.refuseIfPartial(ctx, roomID, "backfill"); err != nil {
		return nil, err
	}
	limit = min(max(limit, 1), maxBackfill)
	evs, err := e.Store.Backfill(ctx, roomID, from, limit)
	if err != nil {
		return nil, fmt.Errorf("backfill: %w", err)
	}
	return e.servableTo(ctx, origin, evs)
}

// MissingEvents answers POST /get_missing_events: events before latest,
// not before earliest, at depth ≥ minDepth, up to limit (10 when zero, at
// most 100), oldest first.
func (e *Engine) MissingEvents(ctx context.Context, origin, roomID string, earliest, latest []string, limit int, minDepth int64) ([][]byte, error) {
	if err := e.checkServerInRoom(ctx, origin, roomID); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultMissing
	}
	limit = min(limit, maxMissingEvents)
	evs, err := e.Store.MissingEvents(ctx, roomID, earliest, latest, limit, minDepth)
	if err != nil {
		return nil, fmt.Errorf("get_missing_events: %w", err)
	}
	return e.servableTo(ctx, origin, evs)
}

// servable returns the JSON of the events that are not rejected.
func servable(evs []*store.StoredEvent) [][]byte {
	out := make([][]byte, 0, len(evs))
	for _, se := range evs {
		if !se.Rejected {
			out = append(out, se.Event.JSON())
		}
	}
	return out
}

// servableTo returns the JSON of the events that are not rejected, each as
// origin may see it.
func (e *Engine) servableTo(ctx context.Context, origin string, evs []*store.StoredEvent) ([][]byte, error) {
	out := make([][]byte, 0, len(evs))
	for _, se := range evs {
		if se.Rejected {
			continue
		}
		ev, err := e.visibleTo(ctx, origin, se)
		if err != nil {
			return nil, err
		}
		out = append(out, ev.JSON())
	}
	return out, nil
}

func (e *Engine) eventsJSON(ctx context.Context, ids []string) ([][]byte, error) {
	evs, err := e.Store.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	return servable(evs), nil
}

// TransactionResponse returns the answer stored for an inbound transaction
// and whether there is one.
func (e *Engine) TransactionResponse(ctx context.Context, origin, txnID string) ([]byte, bool, error) {
	resp, err := e.Store.TxnResponse(ctx, origin, txnID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return resp, true, nil
}

// StoreTransactionResponse records the answer to an inbound transaction.
func (e *Engine) StoreTransactionResponse(ctx context.Context, origin, txnID string, response []byte) error {
	return e.Store.StoreTxnResponse(ctx, origin, txnID, response)
}

// TimestampToEvent answers GET /timestamp_to_event: the timeline event of
// roomID closest to ts (milliseconds) in the direction asked, for a server
// in the room.
func (e *Engine) TimestampToEvent(ctx context.Context, origin, roomID string, ts int64, forward bool) (string, int64, error) {
	if err := e.checkServerInRoom(ctx, origin, roomID); err != nil {
		return "", 0, err
	}
	id, eventTS, err := e.Store.EventNearTimestamp(ctx, roomID, ts, forward)
	if errors.Is(err, store.ErrNotFound) {
		return "", 0, notFound("no event in %s near %d in that direction", roomID, ts)
	}
	if err != nil {
		return "", 0, fmt.Errorf("timestamp to event: %w", err)
	}
	return id, eventTS, nil
}
