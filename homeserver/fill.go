package homeserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

func (e *Engine) missingEventsLimit() int {
	if e.MissingEventsLimit > 0 {
		return e.MissingEventsLimit
	}
	return DefaultMissingEventsLimit
}

// fillGap fetches what is missing before ev from origin (spec: "If the
// server is missing prev events, it should fetch them"): first the events
// between our forward extremities and ev with one bounded
// /get_missing_events, each judged like a received PDU; if some prev event
// is still unknown, the state before ev with /state_ids, its events
// fetched with /event and stored as outliers. It returns the state before
// ev in the second case, nil in the first. The whole fill is bounded by
// FetchTimeout and MaxFetchedEvents.
func (e *Engine) fillGap(ctx context.Context, origin string, h *roomHead, ev *rooms.Event) (rooms.StateMap, error) {
	timeout := e.FetchTimeout
	if timeout <= 0 {
		timeout = DefaultFetchTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := e.Logger.With().Str(fieldOrigin, origin).Str(fieldEventID, ev.EventID()).Logger()
	// The other rooms of the transaction need not hold their commit for
	// this room's fetches.
	if g := store.WriteGroupOf(ctx); g != nil {
		g.Leave()
		defer g.Join()
	}

	v := h.v
	earliest := h.extremities
	raws, err := e.Remote.GetMissingEvents(ctx, origin, ev.RoomID(), earliest, []string{ev.EventID()}, e.missingEventsLimit(), 0)
	if err != nil {
		log.Info().Err(err).Msg("get_missing_events failed")
	}
	fetched := make([]*rooms.Event, 0, len(raws))
	for i, raw := range raws {
		if i >= e.missingEventsLimit() {
			break
		}
		pe, err := rooms.ParseEvent(v, raw)
		if err != nil || pe.RoomID() != ev.RoomID() {
			log.Warn().Err(err).Msg("get_missing_events returned an unusable event")
			continue
		}
		fetched = append(fetched, pe)
	}
	slices.SortStableFunc(fetched, func(a, b *rooms.Event) int { return cmp.Compare(a.Depth(), b.Depth()) })
	for _, pe := range fetched {
		if err := e.receiveOne(ctx, origin, h, pe, false, nil); err != nil {
			log.Info().Err(err).Str("fetched_event", pe.EventID()).Msg("fetched prev event not accepted")
		}
	}
	missing, err := e.prevsWithoutState(ctx, ev)
	if err != nil {
		return nil, err
	}
	if len(missing) == 0 {
		return nil, nil
	}
	log.Info().Strs("missing", missing).Msg("gap not filled by get_missing_events; fetching the state at the event")
	if err := e.flushIfStaged(ctx, h, ev.RoomID()); err != nil {
		return nil, err
	}
	return e.stateAt(ctx, origin, v, ev)
}

// stateAt fetches the state before ev from origin with /state_ids, fetches
// the events of it and of its auth chain that we lack with /event, and
// stores them as outliers (rejected where their own auth events reject
// them). It returns the state.
func (e *Engine) stateAt(ctx context.Context, origin string, v rooms.Version, ev *rooms.Event) (rooms.StateMap, error) {
	stateIDs, chainIDs, err := e.Remote.StateIDs(ctx, origin, ev.RoomID(), ev.EventID())
	if err != nil {
		return nil, fmt.Errorf("state_ids: %w", err)
	}
	want := append(append([]string(nil), chainIDs...), stateIDs...)
	missing, err := e.Store.MissingEventIDs(ctx, want)
	if err != nil {
		return nil, err
	}
	budget := e.maxFetched()
	if len(missing) > budget {
		return nil, fmt.Errorf("state_ids names %d events we lack, more than the %d we fetch", len(missing), budget)
	}
	if n := e.fetchOutliers(ctx, origin, v, missing, &budget); n < len(missing) {
		return nil, fmt.Errorf("only %d of the %d missing state and auth chain events could be fetched and stored", n, len(missing))
	}
	state := make(rooms.StateMap, len(stateIDs))
	for _, id := range stateIDs {
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("state event %s: %w", id, err)
		}
		k, ok := rooms.StateTupleOf(se.Event)
		if !ok || se.Event.RoomID() != ev.RoomID() {
			return nil, fmt.Errorf("state_ids names %s, which is not a state event of the room", id)
		}
		if se.Rejected {
			continue
		}
		if _, dup := state[k]; dup {
			return nil, fmt.Errorf("state_ids names two events for (%s, %q)", k.Type, k.StateKey)
		}
		state[k] = id
	}
	if _, ok := state[rooms.CreateTuple]; !ok {
		return nil, errors.New("the fetched state has no create event")
	}
	return state, nil
}

// fetchOutliers fetches the events ids from origin with /event, at most
// *budget of them (which it decreases), together with auth events they
// need, verifies signatures and hashes, and stores them as outliers in
// an order where auth events come first, each judged against its own auth
// events. It returns how many of ids are held afterwards.
func (e *Engine) fetchOutliers(ctx context.Context, origin string, v rooms.Version, ids []string, budget *int) int {
	log := e.Logger.With().Str(fieldOrigin, origin).Logger()
	pending := map[string]*rooms.Event{}
	queue := append([]string(nil), ids...)
	for len(queue) > 0 && *budget > 0 {
		id := queue[0]
		queue = queue[1:]
		if _, ok := pending[id]; ok {
			continue
		}
		if _, err := e.storedEvent(ctx, id); err == nil {
			continue
		}
		*budget--
		raw, err := e.Remote.Event(ctx, origin, id)
		if err != nil {
			log.Info().Err(err).Str(fieldEventID, id).Msg("event fetch failed")
			continue
		}
		fe, err := rooms.ParseEvent(v, raw)
		if err != nil || fe.EventID() != id {
			log.Warn().Err(err).Str(fieldEventID, id).Msg("fetched event is malformed or has another ID")
			continue
		}
		if err := rooms.VerifyEventSignatures(fe, e.Keys.KeyLookup(ctx)); err != nil {
			log.Warn().Err(err).Str(fieldEventID, id).Msg("fetched event has bad signatures")
			continue
		}
		if !fe.ContentHashValid() {
			fe = fe.Redacted()
		}
		pending[id] = fe
		queue = append(queue, fe.AuthEvents()...)
	}
	// Store in auth order: an event once all its auth events are held.
	for progress := true; progress && len(pending) > 0; {
		progress = false
		for _, id := range sortedKeys(pending) {
			fe := pending[id]
			authEvs, ready := e.heldAuthEvents(ctx, fe)
			if !ready {
				continue
			}
			delete(pending, id)
			progress = true
			outcome, reason := store.Outlier, ""
			create, err := e.createFor(ctx, fe, authEvs)
			if err == nil {
				isRejected := func(id string) bool {
					se, err := e.storedEvent(ctx, id)
					return err == nil && se.Rejected
				}
				err = rooms.CheckAuthEvents(fe, authEvs, create, isRejected)
			}
			if err != nil {
				outcome, reason = store.Rejected, "auth events: "+err.Error()
			}
			if err := e.persist(ctx, store.Batch{Events: []store.NewEvent{{Event: fe, Outcome: outcome, RejectedReason: reason}}}); err != nil {
				log.Error().Err(err).Str(fieldEventID, id).Msg("storing a fetched event failed")
			}
		}
	}
	n := 0
	for _, id := range ids {
		if _, err := e.storedEvent(ctx, id); err == nil {
			n++
		}
	}
	return n
}

// heldAuthEvents returns the auth events of ev if all are held.
func (e *Engine) heldAuthEvents(ctx context.Context, ev *rooms.Event) ([]*rooms.Event, bool) {
	out := make([]*rooms.Event, 0, len(ev.AuthEvents()))
	for _, id := range ev.AuthEvents() {
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return nil, false
		}
		out = append(out, se.Event)
	}
	return out, true
}

// createFor returns the create event ev is judged with: the one its room
// ID names (versions without the create event in auth_events) or the one
// among its auth events.
func (e *Engine) createFor(ctx context.Context, ev *rooms.Event, authEvs []*rooms.Event) (*rooms.Event, error) {
	if ev.Type() == "m.room.create" {
		return nil, nil
	}
	if !ev.Version().CreateInAuthEvents {
		return e.roomCreate(ctx, ev.RoomID())
	}
	for _, ae := range authEvs {
		if k, _ := rooms.StateTupleOf(ae); k == rooms.CreateTuple {
			return ae, nil
		}
	}
	return nil, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
