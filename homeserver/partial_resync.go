package homeserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// maxPartialResyncBackoff bounds the wait between rounds of attempts to
// fetch a partial room's full state.
const maxPartialResyncBackoff = 5 * time.Minute

// errNoLongerPartial ends a resync whose room needs none any more: it
// completed elsewhere, or we left the room.
var errNoLongerPartial = errors.New("the room's state is no longer partial")

// StartPartialResyncs gives the engine the lifetime of its background
// work on partial-state rooms (ctx: the server's, cancelled on shutdown)
// and resumes the resync of every room whose state is still partial,
// after a restart for instance. Joins ask for partial state
// (PartialStateJoins) only once it has been called. Records of rooms we
// are not in (a crash between recording a partial join and persisting
// it) are dropped.
func (e *Engine) StartPartialResyncs(ctx context.Context) error {
	p := &e.partial
	p.mu.Lock()
	p.ctx = ctx
	p.mu.Unlock()
	all, err := e.Store.PartialStateRooms(ctx)
	if err != nil {
		return fmt.Errorf("resume partial-state rooms: %w", err)
	}
	for _, rec := range all {
		_, in, err := e.roomVersion(ctx, rec.RoomID)
		if err != nil {
			return fmt.Errorf("resume partial-state room %s: %w", rec.RoomID, err)
		}
		if !in {
			if err := e.Store.ClearPartialState(ctx, rec.RoomID); err != nil {
				return fmt.Errorf("resume partial-state rooms: %w", err)
			}
			e.setPartial(rec, false)
			continue
		}
		e.setPartial(rec, true)
		e.Logger.Info().Str(fieldRoomID, rec.RoomID).Msg("resuming the fetch of a partial-state room's full state")
		e.startResync(rec)
	}
	return nil
}

// WaitPartialResyncs returns once every background resync has ended;
// they end when they complete or when StartPartialResyncs' context is
// cancelled.
func (e *Engine) WaitPartialResyncs() { e.partial.wg.Wait() }

// backgroundReady reports whether StartPartialResyncs gave the engine a
// lifetime for background resyncs.
func (e *Engine) backgroundReady() bool {
	e.partial.mu.Lock()
	defer e.partial.mu.Unlock()
	return e.partial.ctx != nil && e.partial.ctx.Err() == nil
}

// startResync runs the resync of a partial room in the background unless
// one runs already.
func (e *Engine) startResync(rec store.PartialRoom) {
	p := &e.partial
	p.mu.Lock()
	ctx := p.ctx
	if ctx == nil || ctx.Err() != nil || p.running[rec.RoomID] {
		// Not started, shutting down (a restart resumes it), or running.
		p.mu.Unlock()
		return
	}
	if p.running == nil {
		p.running = make(map[string]bool)
	}
	p.running[rec.RoomID] = true
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		defer func() {
			p.mu.Lock()
			delete(p.running, rec.RoomID)
			p.mu.Unlock()
		}()
		e.resyncLoop(ctx, rec)
	}()
}

// resyncLoop fetches the full state of a partial room from its servers in
// turn until one attempt succeeds, waiting after each failure; the wait
// doubles after each round of the servers.
func (e *Engine) resyncLoop(ctx context.Context, rec store.PartialRoom) {
	log := e.Logger.With().Str(fieldRoomID, rec.RoomID).Logger()
	wait := e.PartialResyncBackoff
	if wait <= 0 {
		wait = time.Second
	}
	servers := slices.DeleteFunc(slices.Clone(rec.Servers), func(s string) bool { return s == "" || s == e.ServerName })
	if len(servers) == 0 {
		log.Error().Msg("a partial-state room names no server to fetch its full state from; it stays partial")
		return
	}
	start := e.now()
	for attempt := 0; ; attempt++ {
		server := servers[attempt%len(servers)]
		err := e.resyncFrom(ctx, rec, server)
		switch {
		case err == nil:
			log.Info().Str("via", server).Int("attempts", attempt+1).Dur("took", e.now().Sub(start)).Msg("partial-state room resynced: its state is full")
			return
		case errors.Is(err, errNoLongerPartial):
			return
		case ctx.Err() != nil:
			return
		}
		log.Warn().Err(err).Str("via", server).Dur("retry_in", wait).Msg("fetching the full state of a partial-state room failed")
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if (attempt+1)%len(servers) == 0 {
			wait = min(2*wait, maxPartialResyncBackoff)
		}
	}
}

// resyncFrom fetches the state before our join from server, verifies it
// as a full join's answer is verified (format, signatures, content
// hashes, auth of every event against its auth events, the state
// authorising the join), persists its events and completes the room.
func (e *Engine) resyncFrom(ctx context.Context, rec store.PartialRoom, server string) error {
	roomID := rec.RoomID
	if !e.isPartialRoom(ctx, roomID) {
		return errNoLongerPartial
	}
	v, in, err := e.roomVersion(ctx, roomID)
	if err != nil {
		return err
	}
	if !in {
		if err := e.Store.ClearPartialState(ctx, roomID); err != nil {
			return err
		}
		e.setPartial(rec, false)
		return errNoLongerPartial
	}
	fetcher, ok := e.Remote.(FullStateFetcher)
	if !ok {
		return errors.New("the engine has no remote that can fetch a room's state")
	}
	joinSE, err := e.storedEvent(ctx, rec.JoinEventID)
	if err != nil {
		return fmt.Errorf("our join: %w", err)
	}
	rawState, rawChain, err := fetcher.FullState(ctx, server, roomID, rec.JoinEventID)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	// Verified and written as a full join's answer is: a chunk at a time,
	// the state events kept as their JSON between the two, so that a big
	// room's state is never held parsed whole. The writes are chunks of a
	// few thousand events: the room is in use meanwhile, and one
	// transaction of its whole state would hold every other write of the
	// server for seconds. A retry skips what is held.
	js, err := e.verifyJoinAnswer(ctx, v, roomID, joinSE.Event, rawState, rawChain)
	if err != nil {
		return fmt.Errorf("state from %s: %w", server, err)
	}
	rawState, rawChain = nil, nil
	if err := e.persistJoinOutliers(ctx, rec.JoinEventID, js); err != nil {
		return fmt.Errorf("persist the full state: %w", err)
	}
	return e.completeResync(ctx, v, rec, joinSE.Event, js.state)
}

// completeResync installs full, the verified state before our join: the
// join gets it as its state before, and every event taken in since gets
// its state recomputed from it
// (each from the states after its prev events, resolved when several),
// the current state is recomputed from the forward extremities, and the
// room's partial record goes, all in one transaction.
func (e *Engine) completeResync(ctx context.Context, v rooms.Version, rec store.PartialRoom, join *rooms.Event, full rooms.StateMap) error {
	roomID := rec.RoomID
	// The full state before the join, the biggest write, goes first
	// without the room's lock, which users' sends wait for. Events judged
	// meanwhile are restated below in any case.
	if err := e.Store.RestateEvents(ctx, roomID, []store.Restated{{EventID: join.EventID(), StateBefore: store.StateRef{Changes: toStore(full)}}}); err != nil {
		return err
	}
	unlock := e.lockRoom(roomID)
	defer unlock()
	locked := e.now()
	if cur, err := e.Store.PartialStateRoom(ctx, roomID); errors.Is(err, store.ErrNotFound) || (err == nil && cur.JoinEventID != rec.JoinEventID) {
		return errNoLongerPartial
	} else if err != nil {
		return err
	}
	since, err := e.Store.EventsSince(ctx, roomID, join.EventID())
	if err != nil {
		return err
	}
	held := make(map[string]*store.StoredEvent, len(since))
	for _, id := range since {
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return err
		}
		held[id] = se
	}
	after := map[string]rooms.StateMap{join.EventID(): withEvent(full, join)}
	stateAfter := func(id string) (rooms.StateMap, error) {
		if m, ok := after[id]; ok {
			return m, nil
		}
		st, err := e.Store.StateAfter(ctx, id)
		if err != nil {
			return nil, err
		}
		m := toRooms(st)
		after[id] = m
		return m, nil
	}
	var restated []store.Restated
	src := &eventSource{ctx: ctx, e: e}
	disallowed := 0
	for _, id := range prevsFirst(since, held) {
		se := held[id]
		ev := se.Event
		prevs := ev.PrevEvents()
		states := make([]rooms.StateMap, 0, len(prevs))
		for _, p := range prevs {
			st, err := stateAfter(p)
			if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNoState) {
				// Taken in with a state fetched whole from its origin
				// (its prev events are not held with theirs): that state
				// is full already.
				states = nil
				break
			}
			if err != nil {
				return err
			}
			states = append(states, st)
		}
		if len(states) == 0 {
			if _, err := stateAfter(id); err != nil {
				return err
			}
			continue
		}
		before := states[0]
		ref := store.StateRef{AfterEvent: prevs[0]}
		if len(states) > 1 {
			if before, err = e.resolveState(v, states, src, e.chainCache(roomID)); err != nil {
				return fmt.Errorf("state resolution before %s: %w", id, err)
			}
			ref.Changes = deltaFrom(states[0], before)
		}
		re := store.Restated{EventID: id, StateBefore: ref}
		if se.Rejected {
			after[id] = before
		} else {
			beforeEvs, err := e.loadState(ctx, before, authKeys(ev))
			if err != nil {
				return err
			}
			if err := rooms.CheckAuth(ev, beforeEvs); err != nil {
				// Judged under partial state with a membership taken from
				// its auth events, which the full state contradicts: a
				// server with the full state rejects it, and so do we
				// from now on (the host has seen it already).
				disallowed++
				re.RejectedReason = "state before the event (full state, after a partial-state join): " + err.Error()
				after[id] = before
				e.Logger.Warn().Str(fieldRoomID, roomID).Str(fieldEventID, id).Err(err).Msg("an event taken in under partial state is not allowed by the full state: rejected")
			} else {
				after[id] = withEvent(before, ev)
			}
		}
		restated = append(restated, re)
	}
	exts, err := e.Store.ForwardExtremities(ctx, roomID)
	if err != nil {
		return err
	}
	if len(exts) == 0 {
		return fmt.Errorf("room %s has no forward extremities", roomID)
	}
	states := make([]rooms.StateMap, 0, len(exts))
	for _, x := range exts {
		st, err := stateAfter(x)
		if err != nil {
			return fmt.Errorf("state after extremity %s: %w", x, err)
		}
		states = append(states, st)
	}
	current := store.StateRef{AfterEvent: exts[0]}
	if len(states) > 1 {
		resolved, err := e.resolveState(v, states, src, e.chainCache(roomID))
		if err != nil {
			return fmt.Errorf("current state resolution: %w", err)
		}
		current.Changes = deltaFrom(states[0], resolved)
	}
	computed := e.now()
	if err := e.Store.CompletePartialState(ctx, roomID, restated, current); err != nil {
		return err
	}
	e.dropHead(roomID)
	for _, re := range restated {
		if re.RejectedReason != "" {
			e.forget(re.EventID)
		}
	}
	e.setPartial(rec, false)
	e.Logger.Info().Str(fieldRoomID, roomID).Int("state_events", len(full)).Int("restated_events", len(restated)).Int("disallowed_by_full_state", disallowed).
		Dur("recompute", computed.Sub(locked)).Dur("write", e.now().Sub(computed)).Msg("full state installed")
	return nil
}

// prevsFirst orders ids (events of one room, in the order they were
// stored) so that each comes after those of its prev events that are
// among ids.
func prevsFirst(ids []string, evs map[string]*store.StoredEvent) []string {
	out := make([]string, 0, len(ids))
	done := make(map[string]bool, len(ids))
	type frame struct {
		id   string
		next int
	}
	for _, root := range ids {
		if done[root] {
			continue
		}
		stack := []frame{{id: root}}
		done[root] = true
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			prevs := evs[top.id].Event.PrevEvents()
			if top.next < len(prevs) {
				p := prevs[top.next]
				top.next++
				if _, ok := evs[p]; ok && !done[p] {
					done[p] = true
					stack = append(stack, frame{id: p})
				}
				continue
			}
			out = append(out, top.id)
			stack = stack[:len(stack)-1]
		}
	}
	return out
}
