package homeserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// ErrDropped is matched by the per-PDU error of an event that was not
// stored at all: unparseable, badly signed, for a room we are not in, or
// refused by the room's server ACL.
var ErrDropped = errors.New("event dropped")

// ErrRejected is matched by the per-PDU error of an event that failed
// authorization; it is stored as rejected.
var ErrRejected = errors.New("event rejected")

// InternalError is the per-PDU error of an event that could not be
// processed because of a fault of ours (the database, say): nothing of it
// was committed, and the transaction should be retried. Its text does not
// reveal the cause, which is logged.
type InternalError struct {
	Err error
}

func (e *InternalError) Error() string { return "internal error while processing the event" }

// Unwrap returns the cause.
func (e *InternalError) Unwrap() error { return e.Err }

// Internal reports that the error is ours, for callers in other packages.
func (e *InternalError) Internal() bool { return true }

func dropped(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDropped, fmt.Sprintf(format, args...))
}

// ReceivePDUs runs the spec's checks on the PDUs of one transaction from
// origin ("Checks performed on receipt of a PDU") and persists each one
// that is not dropped, each in its own database transaction. It returns
// the verdict per event ID: nil for an accepted or soft-failed event, an
// error matching ErrDropped or ErrRejected otherwise. PDUs whose event ID
// cannot be computed (not JSON objects, for instance) are logged and left
// out. PDUs of one room are processed in depth order under the room's lock.
func (e *Engine) ReceivePDUs(ctx context.Context, origin string, pdus [][]byte) map[string]error {
	return e.ReceivePDUTrees(ctx, origin, pdus, nil)
}

// ReceivePDUTrees is ReceivePDUs for PDUs the caller already parsed:
// trees[i], when trees is not nil, is pdus[i] as rooms.ParseJSON returns
// it (the X-Matrix check of a /send request parses the whole body).
func (e *Engine) ReceivePDUTrees(ctx context.Context, origin string, pdus [][]byte, trees []any) map[string]error {
	results := make(map[string]error, len(pdus))
	var order []*roomPDUs
	byRoom := map[string]*roomPDUs{}
	for i, raw := range pdus {
		// Parsed once, for the room ID and for the event itself.
		var tree any
		var err error
		if trees != nil && trees[i] != nil {
			tree = trees[i]
		} else {
			tree, err = rooms.ParseJSON(raw)
		}
		roomID := ""
		if err == nil {
			obj, _ := tree.(map[string]any)
			roomID, _ = obj["room_id"].(string)
		} else {
			tree, roomID = nil, pduRoomID(raw)
		}
		g := byRoom[roomID]
		if g == nil {
			g = &roomPDUs{roomID: roomID}
			byRoom[roomID] = g
			order = append(order, g)
		}
		g.raws = append(g.raws, raw)
		g.trees = append(g.trees, tree)
	}
	if len(order) == 1 {
		e.receiveRoom(ctx, origin, order[0], nil, results)
		return results
	}
	// Rooms are independent: judged at once, their writes share commits
	// (the store groups concurrent writes), which is most of what a room's
	// share of a transaction costs.
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxParallelRooms)
	writes := e.Store.NewWriteGroup()
	ctx = store.WithWriteGroup(ctx, writes)
	var held *heldLookup
	if len(order) <= maxParallelRooms {
		// Every room must reach the lookup before any can go on.
		held = newHeldLookup(e.Store, len(order))
	}
	for _, g := range order {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			writes.Join()
			defer writes.Leave()
			own := make(map[string]error, len(g.raws))
			e.receiveRoom(ctx, origin, g, held, own)
			mu.Lock()
			maps.Copy(results, own)
			mu.Unlock()
		})
	}
	wg.Wait()
	return results
}

// maxParallelRooms bounds the rooms of one transaction judged at once.
// All the rooms a transaction can hold (one per PDU) run together, so
// that their writes share one commit (store.WriteGroup): judged a part
// at a time, each part paid for a commit of its own.
const maxParallelRooms = 50

// roomPDUs are the PDUs of one room in a transaction: their bytes and,
// for those that are strict JSON, their parsed trees (nil otherwise).
type roomPDUs struct {
	roomID string
	raws   [][]byte
	trees  []any
}

// pduRoomID reads room_id from a PDU without checking anything else; ""
// when there is none.
func pduRoomID(raw []byte) string {
	tree, err := rooms.ParseJSONLenient(raw)
	if err != nil {
		return ""
	}
	obj, _ := tree.(map[string]any)
	id, _ := obj["room_id"].(string)
	return id
}

// receiveRoom judges a room's PDUs of a transaction. held, when not nil,
// is the transaction's shared question to the store of which PDUs it
// holds: receiveRoom joins or withdraws from it once, at its start.
func (e *Engine) receiveRoom(ctx context.Context, origin string, g *roomPDUs, held *heldLookup, results map[string]error) {
	roomID, raws := g.roomID, g.raws
	log := e.Logger.With().Str(fieldOrigin, origin).Str(fieldRoomID, roomID).Logger()
	if roomID == "" {
		if held != nil {
			held.withdraw(ctx)
		}
		for _, raw := range raws {
			if ev := parseAnyVersion(raw, ""); ev != nil {
				results[ev.EventID()] = dropped("the event has no room_id; this server is in no room it could create")
			}
		}
		log.Warn().Int("pdus", len(raws)).Msg("PDUs without room_id dropped")
		return
	}
	// Parsing and signature checks need no room state: when the room's
	// version is known they start before its lock is taken.
	var early []*rooms.Event
	var earlyV rooms.Version
	var started *prechecked
	e.cacheMu.Lock()
	cached := e.heads[roomID]
	e.cacheMu.Unlock()
	var writesBefore uint64
	if cached != nil {
		earlyV = cached.v
		early = parseRoomPDUs(earlyV, g, log)
		started = e.verifyEarly(ctx, early)
		defer started.wait()
		if held != nil {
			// Read before the question is asked: see heldlookup.go.
			writesBefore = e.writes.count(roomID)
			held.join(ctx, eventIDs(early))
		}
	} else if held != nil {
		held.withdraw(ctx)
		held = nil
	}
	unlock := e.lockRoom(roomID)
	defer unlock()
	h, err := e.head(ctx, roomID)
	if err != nil {
		log.Error().Err(err).Msg("room lookup failed")
		for _, raw := range raws {
			if ev := parseAnyVersion(raw, roomID); ev != nil {
				results[ev.EventID()] = &InternalError{Err: err}
			}
		}
		return
	}
	if h == nil {
		for _, raw := range raws {
			if ev := parseAnyVersion(raw, roomID); ev != nil {
				results[ev.EventID()] = dropped("this server is not in room %s", roomID)
			}
		}
		log.Warn().Int("pdus", len(raws)).Msg("PDUs for a room we are not in dropped")
		return
	}
	evs := early
	if cached == nil || earlyV.ID != h.v.ID {
		evs, started, held = parseRoomPDUs(h.v, g, log), nil, nil
	}
	var known map[string]bool
	if held != nil && e.writes.count(roomID) == writesBefore {
		known, _ = held.notHeld(ctx, eventIDs(evs))
	}
	pre := e.precheck(ctx, evs, started, known)
	defer pre.wait()
	e.beginStaging(h)
	pre.stage = h.stage
	h.stage.absent = pre.absent
	failed := func(err error) {
		// Our fault: the transaction fails and is retried, so every PDU
		// not committed yet, staged ones included, is answered with it.
		log.Error().Err(err).Msg("processing PDUs failed")
		var fe *flushError
		if errors.As(err, &fe) {
			for _, id := range fe.ids {
				results[id] = &InternalError{Err: err}
			}
		}
		e.dropHead(roomID)
	}
	for i, ev := range evs {
		err := e.receiveOne(ctx, origin, h, ev, true, pre)
		switch {
		case err == nil:
		case errors.Is(err, ErrDropped), errors.Is(err, ErrRejected):
			log.Warn().Err(err).Str(fieldEventID, ev.EventID()).Msg("PDU not accepted")
		default:
			failed(err)
			ids, _ := e.endStaging(ctx, h, roomID)
			for _, id := range ids {
				results[id] = &InternalError{Err: err}
			}
			for _, rest := range evs[i:] {
				results[rest.EventID()] = &InternalError{Err: err}
			}
			return
		}
		results[ev.EventID()] = err
	}
	if _, err := e.endStaging(ctx, h, roomID); err != nil {
		failed(err)
	}
}

// parseRoomPDUs parses a room's PDUs of a transaction under its version,
// in depth order; unparseable ones are logged and left out. The trees of
// g are taken over.
func parseRoomPDUs(v rooms.Version, g *roomPDUs, log zerolog.Logger) []*rooms.Event {
	evs := make([]*rooms.Event, 0, len(g.raws))
	for i, raw := range g.raws {
		var ev *rooms.Event
		var err error
		if g.trees[i] != nil {
			ev, err = rooms.ParseEventTree(v, raw, g.trees[i])
			g.trees[i] = nil // taken over by the event
		} else {
			ev, err = rooms.ParseEvent(v, raw)
		}
		if err != nil {
			log.Warn().Err(err).Msg("unparseable PDU dropped")
			continue
		}
		evs = append(evs, ev)
	}
	slices.SortStableFunc(evs, func(a, b *rooms.Event) int { return cmp.Compare(a.Depth(), b.Depth()) })
	return evs
}

// parseAnyVersion computes the event ID of a PDU of a room whose version
// we do not know, for the per-PDU answer: the version whose room ID scheme
// fits roomID is tried first.
func parseAnyVersion(raw []byte, roomID string) *rooms.Event {
	versions := rooms.SupportedVersions()
	slices.SortStableFunc(versions, func(a, b rooms.Version) int {
		fits := func(v rooms.Version) int {
			if _, err := rooms.ParseRoomIDFor(v, roomID); err == nil {
				return 0
			}
			return 1
		}
		return fits(a) - fits(b)
	})
	for _, v := range versions {
		if ev, err := rooms.ParseEvent(v, raw); err == nil {
			return ev
		}
	}
	return nil
}

// prechecked is what receiveRoom learns about a transaction's PDUs before
// judging them one by one under the room's lock: which of them the store
// did not hold, asked in one query instead of one per PDU, and the
// verdicts of their signatures, verified on every CPU (ed25519 is most of
// a PDU's cost and needs no room state) in the order they are judged, so
// that judging the first ones overlaps verifying the rest.
type prechecked struct {
	signatures map[string]*signatureCheck
	notHeld    map[string]bool
	// absent are those of notHeld the store has no row of, not even a
	// placeholder: written without looking (store.NewEvent.Absent) while
	// stage is current.
	absent map[string]bool
	// stage is the staging area notHeld is true for: once it is flushed
	// (a new one replaces it), staged events are in the store, no longer
	// pinned, and notHeld says nothing about them.
	stage *staged
	// verifiers ends when every signature check is done.
	verifiers sync.WaitGroup
}

// signatureCheck is the verification of one PDU's signatures, running or
// done.
type signatureCheck struct {
	done chan struct{}
	err  error
}

// signature waits for the verdict on the signatures of event id; false
// when precheck did not verify them.
func (p *prechecked) signature(id string) (error, bool) {
	c, ok := p.signatures[id]
	if !ok {
		return nil, false
	}
	<-c.done
	return c.err, true
}

// wait returns once every background verification has ended.
func (p *prechecked) wait() { p.verifiers.Wait() }

// newPrechecked returns an empty precheck for up to n events.
func newPrechecked(n int) *prechecked {
	return &prechecked{signatures: make(map[string]*signatureCheck, n), notHeld: make(map[string]bool, n), absent: make(map[string]bool, n)}
}

// eventIDs returns the IDs of evs.
func eventIDs(evs []*rooms.Event) []string {
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.EventID()
	}
	return ids
}

// precheck finds which of evs the store does not hold, and which of
// those it has no row of (known, when not nil, is the store's answer
// already, as UnheldEvents gives it) and verifies, in
// the background and in the order of evs, the signatures of those that
// pre (what verifyEarly started, or nil) is not verifying yet; call wait
// before dropping the result.
func (e *Engine) precheck(ctx context.Context, evs []*rooms.Event, pre *prechecked, known map[string]bool) *prechecked {
	if pre == nil {
		pre = newPrechecked(len(evs))
	}
	if len(evs) == 0 {
		return pre
	}
	if known == nil {
		// A failed look-up only costs the per-PDU reads it would have saved.
		known, _ = e.Store.UnheldEvents(ctx, eventIDs(evs))
	}
	for id, absent := range known {
		pre.notHeld[id] = true
		if absent {
			pre.absent[id] = true
		}
	}
	var notHeld []*rooms.Event
	for _, ev := range evs {
		if pre.notHeld[ev.EventID()] {
			notHeld = append(notHeld, ev)
		}
	}
	e.verifySignatures(ctx, pre, notHeld)
	return pre
}

// verifyEarly starts verifying the signatures of evs before the room's
// lock is taken: they need no room state, so with several transactions
// of one room in flight, one's are verified while another's are judged.
func (e *Engine) verifyEarly(ctx context.Context, evs []*rooms.Event) *prechecked {
	pre := newPrechecked(len(evs))
	e.verifySignatures(ctx, pre, evs)
	return pre
}

// verifySignatures verifies, on every CPU and in the order of evs, the
// signatures of those of evs pre has no check for yet.
func (e *Engine) verifySignatures(ctx context.Context, pre *prechecked, evs []*rooms.Event) {
	if e.Keys == nil {
		return
	}
	var queue []*rooms.Event
	var checks []*signatureCheck
	for _, ev := range evs {
		if pre.signatures[ev.EventID()] == nil {
			c := &signatureCheck{done: make(chan struct{})}
			pre.signatures[ev.EventID()] = c
			queue, checks = append(queue, ev), append(checks, c)
		}
	}
	if len(queue) == 0 {
		return
	}
	lookup := e.Keys.KeyLookup(ctx)
	var next atomic.Int64
	for range min(runtime.GOMAXPROCS(0), len(queue)) {
		pre.verifiers.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(queue) {
					return
				}
				checks[i].err = rooms.VerifyEventSignatures(queue[i], lookup)
				close(checks[i].done)
			}
		})
	}
}

// receiveOne runs the checks on one parsed PDU of a room we are in, with
// the room locked; h is the room's head. fetch allows filling gaps from
// origin. pre, when not nil, holds what precheck learnt of ev.
func (e *Engine) receiveOne(ctx context.Context, origin string, h *roomHead, ev *rooms.Event, fetch bool, pre *prechecked) error {
	if ok, err := e.aclAllows(ctx, h.current, origin); err != nil {
		return fmt.Errorf("server ACL: %w", err)
	} else if !ok {
		return dropped("server %s is denied by the room's server ACL", origin)
	}
	held, err := e.heldEvent(ctx, ev.EventID(), h, pre)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	case !held.Outlier:
		return verdictOf(held)
	}
	if e.Keys == nil {
		return errors.New("no key source to verify signatures")
	}
	sigErr, checked := error(nil), false
	if pre != nil {
		sigErr, checked = pre.signature(ev.EventID())
	}
	if !checked {
		sigErr = rooms.VerifyEventSignatures(ev, e.Keys.KeyLookup(ctx))
	}
	if sigErr != nil {
		return dropped("signatures: %v", sigErr)
	}
	if !ev.ContentHashValid() {
		e.Logger.Warn().Str(fieldOrigin, origin).Str(fieldEventID, ev.EventID()).Msg("content hash mismatch: keeping the redacted event")
		ev = ev.Redacted()
	}
	var override rooms.StateMap
	missing, err := e.prevsWithoutState(ctx, ev)
	if err != nil {
		return err
	}
	if len(missing) > 0 && h.pendingCount() > 0 {
		// Staged events may have left the cache; commit them and look
		// again before asking anyone.
		if err := e.flushIfStaged(ctx, h, ev.RoomID()); err != nil {
			return err
		}
		if missing, err = e.prevsWithoutState(ctx, ev); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		// Not stored: a later event naming it brings another chance to
		// fetch what is missing.
		if !fetch || e.Remote == nil {
			return dropped("prev events %s are unknown", strings.Join(missing, ", "))
		}
		override, err = e.fillGap(ctx, origin, h, ev)
		if err != nil {
			return dropped("prev events %s are unknown and could not be fetched: %v", strings.Join(missing, ", "), err)
		}
	}
	return e.judge(ctx, origin, h, ev, override)
}

// heldEvent is storedEvent, skipping the store for an event precheck found
// not held, unless this transaction has staged it since.
func (e *Engine) heldEvent(ctx context.Context, id string, h *roomHead, pre *prechecked) (*store.StoredEvent, error) {
	if pre != nil && pre.notHeld[id] && pre.stage != nil && h.stage == pre.stage {
		e.cacheMu.Lock()
		se, staged := e.pinned[id]
		e.cacheMu.Unlock()
		if !staged {
			return nil, fmt.Errorf("event %s: %w", id, store.ErrNotFound)
		}
		return se, nil
	}
	return e.storedEvent(ctx, id)
}

// verdictOf is the per-PDU answer for an event held already.
func verdictOf(se *store.StoredEvent) error {
	if se.Rejected {
		return fmt.Errorf("%w: %s", ErrRejected, se.RejectedReason)
	}
	return nil
}

// prevsWithoutState returns the prev events of ev that are not held with
// their state.
func (e *Engine) prevsWithoutState(ctx context.Context, ev *rooms.Event) ([]string, error) {
	var out []string
	for _, id := range ev.PrevEvents() {
		se, err := e.storedEvent(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			out = append(out, id)
		case err != nil:
			return nil, err
		case se.Outlier:
			out = append(out, id)
		}
	}
	return out, nil
}

// judge applies the three authorization checks to ev, whose prev events
// are held with their state (or whose state before is given as override),
// and persists it with its outcome.
func (e *Engine) judge(ctx context.Context, origin string, h *roomHead, ev *rooms.Event, override rooms.StateMap) error {
	create, err := e.createIn(ctx, h.current)
	if err != nil {
		return err
	}
	authEvs, err := e.authEvents(ctx, origin, h, ev)
	if err != nil {
		return err
	}
	// The state before is computed first so that a rejected event is
	// stored with it: later events naming it as a prev event then have a
	// state to start from.
	before, ref, stateErr := e.stateBefore(ctx, h, ev, override)
	if stateErr != nil && !errors.Is(stateErr, errNoPrevState) {
		return stateErr
	}
	isRejected := func(id string) bool {
		se, err := e.storedEvent(ctx, id)
		return err == nil && se.Rejected
	}
	if err := rooms.CheckAuthEvents(ev, authEvs, create, isRejected); err != nil {
		return e.persistRejected(ctx, h, ev, ref, "auth events: "+err.Error())
	}
	if stateErr != nil {
		return e.persistRejected(ctx, h, ev, nil, stateErr.Error())
	}
	beforeEvs, err := e.loadState(ctx, before, authKeys(ev))
	if err != nil {
		return err
	}
	beforeEvs = e.partialAuthState(ctx, ev, beforeEvs, authEvs) // partial_join.go
	if err := rooms.CheckAuth(ev, beforeEvs); err != nil {
		return e.persistRejected(ctx, h, ev, ref, "state before the event: "+err.Error())
	}
	current, err := e.stateForSoftFail(ctx, h, ev, before)
	if err != nil {
		return err
	}
	current = e.partialAuthState(ctx, ev, current, authEvs) // partial_join.go
	if err := rooms.CheckAuth(ev, current); err != nil {
		e.Logger.Info().Str(fieldOrigin, origin).Str(fieldEventID, ev.EventID()).Err(err).Msg("event soft-failed")
		return e.record(ctx, h, store.Batch{Events: []store.NewEvent{{Event: ev, Outcome: store.SoftFailed, StateBefore: ref}}})
	}
	curRef, newCurrent, err := e.currentAfter(ctx, h, ev, before)
	if err != nil {
		return err
	}
	batch := store.Batch{
		Events:       []store.NewEvent{{Event: ev, Outcome: store.Accepted, StateBefore: ref, Destinations: fanoutOf(ctx, ev)}},
		CurrentState: curRef,
		HostLog:      []store.HostLogEntry{{Kind: hostKindOf(ev), RoomID: ev.RoomID(), EventID: ev.EventID()}},
	}
	if err := e.commitAccepted(ctx, h, ev, batch, newCurrent, beforeEvs); err != nil {
		return err
	}
	h.after.put(ev.EventID(), withEvent(before, ev))
	e.Logger.Debug().Str(fieldOrigin, origin).Str(fieldEventID, ev.EventID()).Msg("event accepted")
	return nil
}

// persist writes a batch and remembers its events as stored.
func (e *Engine) persist(ctx context.Context, b store.Batch) error {
	return e.persistFor(ctx, b, nil)
}

// persistFor is persist; a non-nil lt, the local transaction of the
// batch's one event, is recorded in the same database transaction.
func (e *Engine) persistFor(ctx context.Context, b store.Batch, lt *store.LocalTxn) error {
	if err := e.filterDestinations(ctx, &b); err != nil {
		return err
	}
	return e.persistFiltered(ctx, b, lt)
}

// persistFiltered is persistFor for a batch whose destinations already
// went through the room's server ACL and DestinationAllowed.
func (e *Engine) persistFiltered(ctx context.Context, b store.Batch, lt *store.LocalTxn) error {
	_, err := e.persistResult(ctx, b, lt)
	return err
}

// persistResult is persistFiltered returning what the store reports.
func (e *Engine) persistResult(ctx context.Context, b store.Batch, lt *store.LocalTxn) (store.PersistResult, error) {
	ids := make([]string, 0, len(b.Events))
	for _, ne := range b.Events {
		ids = append(ids, ne.Event.EventID())
	}
	e.forget(ids...)
	defer e.writes.ended(batchRooms(b)...)
	var res store.PersistResult
	var err error
	if lt != nil {
		res, err = e.Store.PersistEventsForTxn(ctx, b, *lt)
	} else {
		res, err = e.Store.PersistEvents(ctx, b)
	}
	if err != nil {
		return res, err
	}
	e.queuedIn(b)
	stored := make(map[string]bool, len(res.Stored))
	for _, id := range res.Stored {
		stored[id] = true
	}
	for _, ne := range b.Events {
		if !stored[ne.Event.EventID()] {
			continue // held before; the store kept what it had
		}
		e.remember(storedFrom(ne))
		if e.ObservePersisted != nil {
			e.ObservePersisted(ne.Outcome, e.isLocal(ne.Event.Sender()))
		}
	}
	e.redactArrived(ctx, res.Stored)
	return res, nil
}

// batchRooms returns the rooms of b's events.
func batchRooms(b store.Batch) []string {
	var out []string
	for _, ne := range b.Events {
		if id := ne.Event.RoomID(); !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// rejectedReason is the reason the store records for a rejected event.
func rejectedReason(ne store.NewEvent) string {
	if ne.Outcome != store.Rejected {
		return ""
	}
	if ne.RejectedReason == "" {
		return "rejected"
	}
	return ne.RejectedReason
}

// persistRejected stores ev as rejected and returns the per-PDU error.
func (e *Engine) persistRejected(ctx context.Context, h *roomHead, ev *rooms.Event, ref *store.StateRef, reason string) error {
	err := e.record(ctx, h, store.Batch{Events: []store.NewEvent{{Event: ev, Outcome: store.Rejected, RejectedReason: reason, StateBefore: ref}}})
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s", ErrRejected, reason)
}

// createIn returns the create event of a state.
func (e *Engine) createIn(ctx context.Context, state rooms.StateMap) (*rooms.Event, error) {
	id, ok := state[rooms.CreateTuple]
	if !ok {
		// A room we hold without its state (a join in progress): nothing
		// can be judged in it yet.
		return nil, dropped("this server does not hold the room's state yet")
	}
	se, err := e.storedEvent(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("create event: %w", err)
	}
	return se.Event, nil
}

// roomCreate returns the room's create event.
func (e *Engine) roomCreate(ctx context.Context, roomID string) (*rooms.Event, error) {
	id, err := e.Store.CurrentStateEvent(ctx, roomID, store.StateKey(rooms.CreateTuple))
	if err != nil {
		return nil, fmt.Errorf("room %s create event: %w", roomID, err)
	}
	se, err := e.storedEvent(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("room %s create event: %w", roomID, err)
	}
	return se.Event, nil
}

// authEvents returns the held auth events of ev, fetching missing ones
// from origin. Events that stay missing are left out; the auth events
// check then rejects ev.
func (e *Engine) authEvents(ctx context.Context, origin string, h *roomHead, ev *rooms.Event) ([]*rooms.Event, error) {
	out := make([]*rooms.Event, 0, len(ev.AuthEvents()))
	budget := e.maxFetched()
	for _, id := range ev.AuthEvents() {
		se, err := e.storedEvent(ctx, id)
		if errors.Is(err, store.ErrNotFound) && e.Remote != nil && budget > 0 {
			if err := e.flushIfStaged(ctx, h, ev.RoomID()); err != nil {
				return nil, err
			}
			e.fetchOutliers(ctx, origin, h.v, []string{id}, &budget)
			se, err = e.storedEvent(ctx, id)
		}
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, se.Event)
	}
	return out, nil
}

// errNoPrevState is matched when the state before an event cannot be
// computed because its prev events are not held with their state.
var errNoPrevState = errors.New("prev events are not held with their state")

// stateBefore computes the state before ev: the resolution of the states
// after its prev events, or override. It returns the state and how to
// store it.
func (e *Engine) stateBefore(ctx context.Context, h *roomHead, ev *rooms.Event, override rooms.StateMap) (rooms.StateMap, *store.StateRef, error) {
	if override != nil {
		return override, &store.StateRef{Changes: toStore(override)}, nil
	}
	prevs := ev.PrevEvents()
	if len(prevs) == 1 && len(h.extremities) == 1 && prevs[0] == h.extremities[0] {
		// The usual case: the event follows the only extremity, after
		// which the state is the current state.
		return h.current, &store.StateRef{AfterEvent: prevs[0]}, nil
	}
	known, inMemory := h.statesAfter(prevs)
	if inMemory && len(known) > 0 {
		// Prev events whose states are known in memory: those of a fork
		// that agree need nothing resolved, nor anything read back; those
		// that differ were most likely resolved already.
		if allSameState(known) {
			return known[0], &store.StateRef{AfterEvent: prevs[0]}, nil
		}
		if m, ok := h.resolved.get(known); ok {
			return m.resolved, &store.StateRef{AfterEvent: prevs[0], Changes: m.delta}, nil
		}
	}
	if err := e.flushIfStaged(ctx, h, ev.RoomID()); err != nil {
		return nil, nil, err
	}
	states := make([]rooms.StateMap, 0, len(prevs))
	var first string
	for _, id := range prevs {
		st, err := e.Store.StateAfter(ctx, id)
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNoState) {
			return nil, nil, fmt.Errorf("%w: %s", errNoPrevState, id)
		}
		if err != nil {
			return nil, nil, err
		}
		if first == "" {
			first = id
		}
		states = append(states, toRooms(st))
	}
	if len(states) == 0 {
		return nil, nil, fmt.Errorf("%w: the event has no prev events", errNoPrevState)
	}
	if len(states) == 1 {
		return states[0], &store.StateRef{AfterEvent: first}, nil
	}
	src := &eventSource{ctx: ctx, e: e}
	resolved, err := e.resolveState(h.v, states, src, e.chainCache(ev.RoomID()))
	if err != nil {
		return nil, nil, fmt.Errorf("state resolution before %s: %w", ev.EventID(), err)
	}
	delta := deltaFrom(states[0], resolved)
	if inMemory && len(known) == len(prevs) {
		h.resolved.put(memoEntry{inputs: known, resolved: resolved, delta: delta})
	}
	return resolved, &store.StateRef{AfterEvent: first, Changes: delta}, nil
}

// stateForSoftFail returns the state ev is judged by for soft failure
// (the auth keys of it): the room's current state when ev's prev events
// are exactly the forward extremities, else the resolution of the current
// state and the state before ev, which is what the current state becomes
// if ev is accepted. A fork thus soft-fails an event only when the room's
// newer state forbids it, not merely because its branch is not yet known
// to the current state.
func (e *Engine) stateForSoftFail(ctx context.Context, h *roomHead, ev *rooms.Event, before rooms.StateMap) (map[rooms.StateTuple]*rooms.Event, error) {
	prevs := slices.Clone(ev.PrevEvents())
	slices.Sort(prevs)
	if slices.Equal(slices.Compact(prevs), h.extremities) || sameState(h.current, before) {
		return e.loadState(ctx, h.current, authKeys(ev))
	}
	inputs := []rooms.StateMap{h.current, before}
	if m, ok := h.resolved.get(inputs); ok {
		return e.loadState(ctx, m.resolved, authKeys(ev))
	}
	src := &eventSource{ctx: ctx, e: e}
	resolved, err := e.resolveState(h.v, inputs, src, e.chainCache(ev.RoomID()))
	if err != nil {
		return nil, fmt.Errorf("soft-fail state resolution: %w", err)
	}
	h.resolved.put(memoEntry{inputs: inputs, resolved: resolved, delta: deltaFrom(inputs[0], resolved)})
	return e.loadState(ctx, resolved, authKeys(ev))
}

// currentAfter computes the room's current state once ev is accepted: the
// resolution of the states at the new forward extremities. It returns how
// to store it and the state itself.
func (e *Engine) currentAfter(ctx context.Context, h *roomHead, ev *rooms.Event, before rooms.StateMap) (*store.StateRef, rooms.StateMap, error) {
	after := withEvent(before, ev)
	var others []string
	for _, x := range h.extremities {
		if !slices.Contains(ev.PrevEvents(), x) {
			others = append(others, x)
		}
	}
	if len(others) == 0 {
		return &store.StateRef{AfterEvent: ev.EventID()}, after, nil
	}
	known, inMemory := h.statesAfter(others)
	inputs := append([]rooms.StateMap{after}, known...)
	if inMemory {
		if allSameState(inputs) {
			// The other extremities are at the same state: it stays
			// current.
			return &store.StateRef{AfterEvent: ev.EventID()}, after, nil
		}
		if m, ok := h.resolved.get(inputs); ok {
			return &store.StateRef{AfterEvent: ev.EventID(), Changes: m.delta}, m.resolved, nil
		}
	}
	if err := e.flushIfStaged(ctx, h, ev.RoomID()); err != nil {
		return nil, nil, err
	}
	states := []rooms.StateMap{after}
	for _, x := range others {
		st, err := e.Store.StateAfter(ctx, x)
		if err != nil {
			return nil, nil, fmt.Errorf("state after extremity %s: %w", x, err)
		}
		states = append(states, toRooms(st))
	}
	src := &eventSource{ctx: ctx, e: e, extra: map[string]*rooms.Event{ev.EventID(): ev}}
	resolved, err := e.resolveState(h.v, states, src, e.chainCache(ev.RoomID()))
	if err != nil {
		return nil, nil, fmt.Errorf("current state resolution: %w", err)
	}
	delta := deltaFrom(after, resolved)
	if inMemory {
		h.resolved.put(memoEntry{inputs: inputs, resolved: resolved, delta: delta})
	}
	return &store.StateRef{AfterEvent: ev.EventID(), Changes: delta}, resolved, nil
}

func (e *Engine) maxFetched() int {
	if e.MaxFetchedEvents > 0 {
		return e.MaxFetchedEvents
	}
	return DefaultMaxFetchedEvents
}
