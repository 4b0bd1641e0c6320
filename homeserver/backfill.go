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

// Backfiller asks a server for a room's history (GET /backfill).
// *federation.Client satisfies it; the engine uses it when its Remote
// does.
type Backfiller interface {
	// Backfill asks server for up to limit events of roomID, starting
	// with the from events themselves and walking back.
	Backfill(ctx context.Context, server, roomID string, from []string, limit int) ([][]byte, error)
}

// Bounds of one backfill.
const (
	// MaxBackfillLimit bounds the events asked of a server at once.
	MaxBackfillLimit = 100
	// maxBackfillStateFetches bounds the /state_ids requests one backfill
	// makes for events whose prev events are not held (usually one: the
	// oldest event of the answer).
	maxBackfillStateFetches = 5
)

// BackfillRoom fetches history older than the from events (held events
// of a room we are in) from the other servers in the room with
// /backfill, asking each in turn until one answers. Every event received
// is checked like any fetched event: format, room, signatures, content
// hash (a mismatch keeps the redacted form) and authorization against its
// own auth events, fetched when missing; events that pass are stored as
// events of the room's timeline with the state before them (computed
// from their prev events, or asked of the server with /state_ids when
// those are not held), never as the current state and never for the host
// log. It returns how many events were stored; 0 with a nil error means
// the servers had nothing older. When every server fails the error is an
// Unavailable refusal. The work is bounded by FetchTimeout, limit
// (at most MaxBackfillLimit) and MaxFetchedEvents.
func (e *Engine) BackfillRoom(ctx context.Context, roomID string, from []string, limit int) (int, error) {
	bf, ok := e.Remote.(Backfiller)
	if !ok {
		return 0, unavailable("backfill %s: this server cannot ask other servers for history", roomID)
	}
	if len(from) == 0 {
		return 0, badRequest("backfill %s: no event to backfill from", roomID)
	}
	limit = min(max(limit, 1), MaxBackfillLimit)
	timeout := e.FetchTimeout
	if timeout <= 0 {
		timeout = DefaultFetchTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	unlock := e.lockRoom(roomID)
	defer unlock()
	h, err := e.head(ctx, roomID)
	if err != nil {
		return 0, fmt.Errorf("backfill %s: %w", roomID, err)
	}
	if h == nil {
		return 0, notFound("backfill: this server is not in room %s", roomID)
	}
	if err := e.flushIfStaged(ctx, h, roomID); err != nil {
		return 0, fmt.Errorf("backfill %s: %w", roomID, err)
	}
	servers, err := e.Store.JoinedServers(ctx, roomID)
	if err != nil {
		return 0, fmt.Errorf("backfill %s: %w", roomID, err)
	}
	var failures []error
	for _, server := range servers {
		if server == e.ServerName {
			continue
		}
		raws, err := bf.Backfill(ctx, server, roomID, from, limit)
		if err != nil {
			if ctx.Err() != nil {
				failures = append(failures, fmt.Errorf("%s: %w", server, ctx.Err()))
				break
			}
			e.Logger.Info().Err(err).Str(fieldRoomID, roomID).Str(fieldOrigin, server).Msg("backfill request failed; trying the next server")
			failures = append(failures, fmt.Errorf("%s: %w", server, err))
			continue
		}
		n, err := e.takeBackfill(ctx, server, h, roomID, raws, limit)
		if err != nil {
			return n, fmt.Errorf("backfill %s from %s: %w", roomID, server, err)
		}
		e.Logger.Info().Str(fieldRoomID, roomID).Str(fieldOrigin, server).Int("received", len(raws)).Int("stored", n).Msg("backfilled")
		if n > 0 {
			// The forward extremities are the store's to decide; read
			// them again.
			e.dropHead(roomID)
			return n, nil
		}
		// A server that answered with nothing new may lack history the
		// next one has.
	}
	if len(failures) > 0 && len(failures) == countOthers(servers, e.ServerName) {
		return 0, unavailable("backfill %s: every server failed: %v", roomID, errors.Join(failures...))
	}
	return 0, nil
}

func countOthers(servers []string, us string) int {
	n := 0
	for _, s := range servers {
		if s != us {
			n++
		}
	}
	return n
}

// takeBackfill checks and stores the events a server sent for backfill,
// oldest first, with the room's lock held.
func (e *Engine) takeBackfill(ctx context.Context, server string, h *roomHead, roomID string, raws [][]byte, limit int) (int, error) {
	if e.Keys == nil {
		return 0, errors.New("no key source to verify signatures")
	}
	log := e.Logger.With().Str(fieldOrigin, server).Str(fieldRoomID, roomID).Logger()
	lookup := e.Keys.KeyLookup(ctx)
	seen := map[string]bool{}
	var fresh []*rooms.Event
	for i, raw := range raws {
		if i >= limit {
			break
		}
		ev, err := rooms.ParseEvent(h.v, raw)
		if err != nil || ev.RoomID() != roomID {
			log.Warn().Err(err).Msg("backfill returned an unusable event")
			continue
		}
		if seen[ev.EventID()] {
			continue
		}
		seen[ev.EventID()] = true
		if se, err := e.storedEvent(ctx, ev.EventID()); err == nil && !se.Outlier {
			continue // in the timeline already, or judged before
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, err
		}
		if err := rooms.VerifyEventSignatures(ev, lookup); err != nil {
			log.Warn().Err(err).Str(fieldEventID, ev.EventID()).Msg("backfilled event has bad signatures")
			continue
		}
		if !ev.ContentHashValid() {
			ev = ev.Redacted()
		}
		fresh = append(fresh, ev)
	}
	slices.SortStableFunc(fresh, func(a, b *rooms.Event) int {
		if c := cmp.Compare(a.Depth(), b.Depth()); c != 0 {
			return c
		}
		return cmp.Compare(a.EventID(), b.EventID())
	})
	budget := e.maxFetched()
	stateFetches := 0
	stored := 0
	for _, ev := range fresh {
		if ctx.Err() != nil {
			return stored, nil // bounded: what is stored stays
		}
		ok, err := e.backfillOne(ctx, server, h, ev, &budget, &stateFetches)
		if err != nil {
			return stored, err
		}
		if ok {
			stored++
		}
	}
	return stored, nil
}

// backfillOne authorises one backfilled event against its own auth events
// and stores it with the state before it. It reports whether the event
// joined the timeline; an event that cannot be placed is logged and left
// out.
func (e *Engine) backfillOne(ctx context.Context, server string, h *roomHead, ev *rooms.Event, budget, stateFetches *int) (bool, error) {
	log := e.Logger.With().Str(fieldOrigin, server).Str(fieldEventID, ev.EventID()).Logger()
	authEvs, ready := e.heldAuthEvents(ctx, ev)
	if !ready {
		var missing []string
		for _, id := range ev.AuthEvents() {
			if _, err := e.storedEvent(ctx, id); err != nil {
				missing = append(missing, id)
			}
		}
		e.fetchOutliers(ctx, server, h.v, missing, budget)
		if authEvs, ready = e.heldAuthEvents(ctx, ev); !ready {
			log.Info().Msg("backfilled event left out: its auth events could not be fetched")
			return false, nil
		}
	}
	create, err := e.createFor(ctx, ev, authEvs)
	if err == nil {
		isRejected := func(id string) bool {
			se, err := e.storedEvent(ctx, id)
			return err == nil && se.Rejected
		}
		err = rooms.CheckAuthEvents(ev, authEvs, create, isRejected)
	}
	if err != nil {
		log.Info().Err(err).Msg("backfilled event rejected by its auth events")
		reject := store.Batch{Events: []store.NewEvent{{Event: ev, Outcome: store.Rejected, RejectedReason: "auth events: " + err.Error()}}}
		return false, e.persist(ctx, reject)
	}
	var before rooms.StateMap
	var ref *store.StateRef
	missing, err := e.prevsWithoutState(ctx, ev)
	if err != nil {
		return false, err
	}
	switch {
	case len(ev.PrevEvents()) == 0:
		// The create event: nothing before it.
		before, ref = rooms.StateMap{}, &store.StateRef{Changes: store.StateMap{}}
	case len(missing) == 0:
		before, ref, err = e.stateBefore(ctx, h, ev, nil)
		if err != nil {
			return false, err
		}
	default:
		if *stateFetches >= maxBackfillStateFetches {
			log.Info().Msg("backfilled event left out: too many state fetches for one backfill")
			return false, nil
		}
		*stateFetches++
		before, err = e.stateAt(ctx, server, h.v, ev)
		if err != nil {
			log.Info().Err(err).Msg("backfilled event left out: the state before it could not be fetched")
			return false, nil
		}
		ref = &store.StateRef{Changes: toStore(before)}
	}
	batch := store.Batch{Events: []store.NewEvent{{Event: ev, Outcome: store.Accepted, StateBefore: ref}}}
	if err := e.persist(ctx, batch); err != nil {
		return false, err
	}
	if ev.Redacts() != "" {
		state, err := e.loadState(ctx, before, []rooms.StateTuple{rooms.CreateTuple, {Type: "m.room.power_levels"}})
		if err != nil {
			return true, err
		}
		if err := e.applyRedaction(ctx, ev, state); err != nil {
			return true, err
		}
	}
	return true, nil
}
