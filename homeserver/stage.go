package homeserver

import (
	"context"
	"fmt"
	"slices"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// staged is what the engine decided about a room's events of one
// transaction but has not committed yet. The PDUs of a transaction are
// judged one after the other against the room's head, which moves as each
// is decided, and committed together in one database transaction by
// flush: one commit per transaction and room instead of one per PDU.
// Staged events are pinned in the event cache so every lookup sees them.
type staged struct {
	batch      store.Batch
	ids        []string
	redactions []stagedRedaction
	// absent are events the store had no row of when the transaction
	// began (prechecked.absent). Only the first flush of a transaction
	// may rely on it: what that flush writes can leave placeholders of
	// the transaction's later events.
	absent map[string]bool
}

type stagedRedaction struct {
	ev    *rooms.Event
	state map[rooms.StateTuple]*rooms.Event
}

// beginStaging makes the head collect decisions until flush.
func (e *Engine) beginStaging(h *roomHead) {
	h.stage = &staged{}
}

// record writes b: staged when the head is staging, else committed now.
func (e *Engine) record(ctx context.Context, h *roomHead, b store.Batch) error {
	if h == nil || h.stage == nil {
		return e.persist(ctx, b)
	}
	s := h.stage
	s.batch.Events = append(s.batch.Events, b.Events...)
	s.batch.HostLog = append(s.batch.HostLog, b.HostLog...)
	if b.CurrentState != nil {
		s.batch.CurrentState = b.CurrentState
	}
	e.cacheMu.Lock()
	if e.pinned == nil {
		e.pinned = make(map[string]*store.StoredEvent)
	}
	for _, ne := range b.Events {
		s.ids = append(s.ids, ne.Event.EventID())
		e.pinned[ne.Event.EventID()] = storedFrom(ne)
	}
	e.cacheMu.Unlock()
	return nil
}

// pendingCount returns how many events are staged.
func (h *roomHead) pendingCount() int {
	if h == nil || h.stage == nil {
		return 0
	}
	return len(h.stage.ids)
}

// flush commits what is staged, then reads the forward extremities back
// and applies staged redactions. It returns the IDs it committed; on
// error nothing was committed and the head is dropped. Staging goes on.
func (e *Engine) flush(ctx context.Context, h *roomHead, roomID string) ([]string, error) {
	if h == nil || h.stage == nil || len(h.stage.ids) == 0 {
		return nil, nil
	}
	s := h.stage
	h.stage = &staged{}
	for i, ne := range s.batch.Events {
		if s.absent[ne.Event.EventID()] {
			s.batch.Events[i].Absent = true
		}
	}
	var res store.PersistResult
	err := e.filterDestinations(ctx, &s.batch)
	if err == nil {
		res, err = e.persistResult(ctx, s.batch, nil)
	}
	e.cacheMu.Lock()
	for _, id := range s.ids {
		delete(e.pinned, id)
	}
	e.cacheMu.Unlock()
	if err != nil {
		e.forget(s.ids...)
		e.dropHead(roomID)
		return s.ids, &flushError{ids: s.ids, err: err}
	}
	switch {
	case res.Extremities != nil:
		// As the store decided them (an event that a held event already
		// follows does not become one), without reading them back.
		h.extremities = res.Extremities
	case s.batch.CurrentState != nil:
		e.accepted(ctx, h, roomID, h.current)
	}
	for _, r := range s.redactions {
		if err := e.applyRedaction(ctx, r.ev, r.state); err != nil {
			e.Logger.Error().Err(err).Str(fieldEventID, r.ev.EventID()).Msg("applying a redaction failed")
		}
	}
	return s.ids, nil
}

// endStaging flushes and stops staging. Errors are as for flush.
func (e *Engine) endStaging(ctx context.Context, h *roomHead, roomID string) ([]string, error) {
	ids, err := e.flush(ctx, h, roomID)
	h.stage = nil
	return ids, err
}

// commitAccepted stores an accepted event with the room's new current
// state and moves the head. Staged, the extremities move in memory
// (flush reads them back); committed now, they are read back at once.
func (e *Engine) commitAccepted(ctx context.Context, h *roomHead, ev *rooms.Event, b store.Batch, newCurrent rooms.StateMap, beforeEvs map[rooms.StateTuple]*rooms.Event) error {
	if h.stage == nil {
		if err := e.persist(ctx, b); err != nil {
			return err
		}
		e.accepted(ctx, h, ev.RoomID(), newCurrent)
		return e.applyRedaction(ctx, ev, beforeEvs)
	}
	if err := e.record(ctx, h, b); err != nil {
		return err
	}
	exts := make([]string, 0, len(h.extremities)+1)
	for _, x := range h.extremities {
		if !slices.Contains(ev.PrevEvents(), x) {
			exts = append(exts, x)
		}
	}
	exts = append(exts, ev.EventID())
	slices.Sort(exts)
	h.extremities = exts
	h.current = newCurrent
	if ev.Redacts() != "" {
		h.stage.redactions = append(h.stage.redactions, stagedRedaction{ev: ev, state: beforeEvs})
	}
	return nil
}

// flushError is a failed commit of staged events: none of ids was
// committed, though they may have been answered as accepted.
type flushError struct {
	ids []string
	err error
}

func (f *flushError) Error() string {
	return fmt.Sprintf("committing %d events: %v", len(f.ids), f.err)
}
func (f *flushError) Unwrap() error { return f.err }

// flushIfStaged commits staged events before a read of the database that
// must see them.
func (e *Engine) flushIfStaged(ctx context.Context, h *roomHead, roomID string) error {
	if h.pendingCount() == 0 {
		return nil
	}
	_, err := e.flush(ctx, h, roomID)
	return err
}

// maxAwaitedRedactions bounds the redactions kept waiting for their
// targets.
const maxAwaitedRedactions = 10000

// awaitTarget keeps an accepted redaction whose target is not held yet, to
// apply it when the target is stored. The wait lasts as long as the
// process.
func (e *Engine) awaitTarget(target string, r stagedRedaction) {
	e.cacheMu.Lock()
	defer e.cacheMu.Unlock()
	if e.awaiting == nil {
		e.awaiting = make(map[string][]stagedRedaction)
	}
	if len(e.awaiting) >= maxAwaitedRedactions {
		e.Logger.Warn().Str(fieldEventID, r.ev.EventID()).Msg("too many redactions waiting for their targets; this one is not kept")
		return
	}
	e.awaiting[target] = append(e.awaiting[target], r)
}

// redactArrived applies the redactions that waited for events just stored.
func (e *Engine) redactArrived(ctx context.Context, ids []string) {
	e.cacheMu.Lock()
	if len(e.awaiting) == 0 {
		e.cacheMu.Unlock()
		return
	}
	var due []stagedRedaction
	for _, id := range ids {
		due = append(due, e.awaiting[id]...)
		delete(e.awaiting, id)
	}
	e.cacheMu.Unlock()
	for _, r := range due {
		if err := e.applyRedaction(ctx, r.ev, r.state); err != nil {
			e.Logger.Error().Err(err).Str(fieldEventID, r.ev.EventID()).Msg("applying a redaction failed")
		}
	}
}

// storedFrom is the record the store keeps for a new event.
func storedFrom(ne store.NewEvent) *store.StoredEvent {
	return &store.StoredEvent{
		Event:          ne.Event,
		Outlier:        ne.Outcome == store.Outlier || (ne.Outcome == store.Rejected && ne.StateBefore == nil),
		Rejected:       ne.Outcome == store.Rejected,
		RejectedReason: rejectedReason(ne),
		SoftFailed:     ne.Outcome == store.SoftFailed,
	}
}
