package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/ferry-matrix/ferry/rooms"
)

// wtx is one write transaction of PersistEvents: the transaction, the
// room and caches that live as long as the transaction. Numbers learnt
// here reach the DB-wide caches only after commit.
type wtx struct {
	t       *txn
	db      *DB
	roomNID int64
	// roomID and roomVersion name the room of roomNID, published to the
	// room cache once committed.
	roomID, roomVersion string

	eventNIDs map[string]int64
	newKeys   map[StateKey]int64
	// rows caches the events rows written by this transaction.
	rows map[string]*eventRow
	// followed marks events that an accepted event of this transaction
	// lists as a prev event (whose edges may still be buffered).
	followed map[int64]bool
	// nextNID is the last event number handed out (the table's highest
	// at the start); events known to be new get theirs from it and wait
	// in newEvents for a multi-row INSERT. Nothing else can number events
	// meanwhile: this is the only writer.
	nextNID int64
	// known holds the batch's non-outlier event IDs that had a row (held
	// or placeholder) when the transaction began.
	known map[string]bool
	// ext is the room's forward extremities as this transaction changes
	// them (nil until first needed); extAtStart what the table holds.
	ext, extAtStart map[int64]bool

	*writeBuffers
}

// writeBuffers are the rows event writes buffer for multi-row INSERTs.
// The writes of a merged group share one set (txn.shared), so that the
// rooms of a transaction are written with a statement per table rather
// than one per table and room.
type writeBuffers struct {
	newEvents, prevEdges, authEdges, entries, current, outbound *rowBuffer
	// numberedArgs is reused by insertNumbered.
	numberedArgs []any
	// addedExts and droppedExts are forward extremity rows to insert and
	// to delete; the inserts are written first, so a later write of the
	// same room in a merged group can drop what an earlier one added.
	addedExts, droppedExts *rowBuffer
	// hostLog holds host log entries numbered by the store (bufferHostLog).
	hostLog *rowBuffer
}

func (db *DB) newWriteBuffers() *writeBuffers {
	return &writeBuffers{
		outbound:  newRowBuffer(db.d.outboundRows),
		newEvents: newRowBuffer(db.d.newEventRows),
		prevEdges: newRowBuffer(db.d.prevEdgeRows),
		authEdges: newRowBuffer(db.d.authEdgeRows),
		entries:   newRowBuffer(db.d.stateEntryRows),
		current:   newRowBuffer(db.d.currentStateRows),

		addedExts:   newRowBuffer(db.d.extremityRows),
		droppedExts: newRowBuffer(db.d.droppedExtremityRows),
		hostLog:     newRowBuffer(db.d.numberedHostLogRows),
	}
}

func (db *DB) newWtx(t *txn) *wtx {
	bufs := t.shared
	if bufs == nil {
		bufs = db.newWriteBuffers()
	}
	return &wtx{t: t, db: db, eventNIDs: make(map[string]int64), newKeys: make(map[StateKey]int64),
		rows: make(map[string]*eventRow), followed: make(map[int64]bool), writeBuffers: bufs}
}

// committed publishes the transaction's new state-key numbers and the
// event numbers it used.
func (w *wtx) committed() {
	w.db.nids.publish(len(w.eventNIDs), maps.All(w.eventNIDs))
	if w.roomNID != 0 {
		w.db.roomNIDs.publish(w.roomID, w.roomVersion, w.roomNID)
	}
	if w.ext != nil {
		w.db.publishExtremities(w.roomNID, w.committedExtremities())
	}
	w.db.publishEventRows(w.rows)
	if len(w.newKeys) == 0 {
		return
	}
	w.db.mu.Lock()
	for k, nid := range w.newKeys {
		w.db.stateKeys[k] = nid
		w.db.skNames[nid] = k
	}
	w.db.mu.Unlock()
}

// stateKeyNID returns the number of (type, state_key), making one if new.
func (w *wtx) stateKeyNID(k StateKey) (int64, error) {
	if nid, ok := w.newKeys[k]; ok {
		return nid, nil
	}
	w.db.mu.Lock()
	nid, ok := w.db.stateKeys[k]
	w.db.mu.Unlock()
	if ok {
		return nid, nil
	}
	err := w.t.queryRow(w.db.d.lookupStateKey, k.Type, k.StateKey).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		var typ, key string
		err = w.t.queryRow(w.db.d.multiInsert(w.db.d.stateKeyRows, 1), k.Type, k.StateKey).Scan(&nid, &typ, &key)
	}
	if err != nil {
		return 0, fmt.Errorf("state key %q/%q: %w", k.Type, k.StateKey, err)
	}
	w.newKeys[k] = nid
	return nid, nil
}

// eventNID returns the number of an event ID, making a placeholder row in
// the room when the event is not held yet.
func (w *wtx) eventNID(id string) (int64, error) {
	if nid, ok := w.eventNIDs[id]; ok {
		return nid, nil
	}
	if nid, ok := w.db.nids.get(id); ok {
		w.eventNIDs[id] = nid
		return nid, nil
	}
	var nid int64
	err := w.t.queryRow(w.db.d.lookupEventNID, id).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		if err := w.autoNumbered(); err != nil {
			return 0, err
		}
		err = w.t.queryRow(w.db.d.insertPlaceholder, id, w.roomNID).Scan(&nid)
		w.numbered(nid)
	}
	if err != nil {
		return 0, fmt.Errorf("event %s: %w", id, err)
	}
	w.eventNIDs[id] = nid
	return nid, nil
}

// PersistEvents writes a batch of events of one room in one transaction:
// each event row with its prev and auth edges and the snapshot of the
// state before it, the forward extremities, the current state, outbound
// queue entries and host log entries. Either all of it is committed or
// none. Events already held are skipped (an outlier held before is
// promoted when it comes again with its state).
//
// Forward extremities follow the events: an Accepted event replaces its
// prev events as an extremity, unless a held accepted event already
// follows it.
func (db *DB) PersistEvents(ctx context.Context, b Batch) (PersistResult, error) {
	var res PersistResult
	if len(b.Events) == 0 && b.CurrentState == nil && len(b.HostLog) == 0 {
		return res, nil
	}
	w, err := db.writeGrouped(ctx, func(t *txn) (*wtx, error) {
		res = PersistResult{}
		w := db.newWtx(t)
		return w, w.persist(b, &res)
	})
	if err != nil {
		return PersistResult{}, fmt.Errorf("store: persist events: %w", err)
	}
	w.committed()
	if n := len(res.HostLog); n > 0 {
		db.hostLog.advance(res.HostLog[n-1])
	}
	return res, nil
}

func (w *wtx) persist(b Batch, res *PersistResult) error {
	roomID, version, err := batchRoom(b)
	if err != nil {
		return err
	}
	if w.t.lastNID > 0 {
		w.nextNID = w.t.lastNID
	} else if err := w.t.queryRow(w.db.d.maxEventNID).Scan(&w.nextNID); err != nil {
		return err
	}
	if err := w.loadKnown(b); err != nil {
		return err
	}
	if roomID != "" {
		if w.roomNID, err = w.db.roomNIDFor(w.t, roomID, version, b.RoomStatus); err != nil {
			return err
		}
		w.roomID, w.roomVersion = roomID, version
	}
	if err := w.prefetchStateKeys(b); err != nil {
		return err
	}
	seen := make(map[string]bool, len(b.Events))
	var outliers []*rooms.Event
	for i := range b.Events {
		ne := &b.Events[i]
		id := ne.Event.EventID()
		if seen[id] {
			continue
		}
		seen[id] = true
		if ne.Outcome == Outlier {
			outliers = append(outliers, ne.Event)
			if len(outliers) == rowChunk {
				if err := w.persistOutliers(outliers, res); err != nil {
					return err
				}
				outliers = outliers[:0]
			}
			continue
		}
		if err := w.persistOutliers(outliers, res); err != nil {
			return err
		}
		outliers = outliers[:0]
		stored, err := w.persistOne(ne)
		if err != nil {
			return fmt.Errorf("event %s: %w", id, err)
		}
		if stored {
			res.Stored = append(res.Stored, id)
		}
	}
	if err := w.persistOutliers(outliers, res); err != nil {
		return err
	}
	if err := w.writeExtremities(); err != nil {
		return err
	}
	res.Extremities = w.extremityIDs()
	if b.CurrentState != nil {
		if w.roomNID == 0 {
			return errors.New("current state given without events")
		}
		snap, err := w.resolveState(b.CurrentState)
		if err != nil {
			return fmt.Errorf("current state: %w", err)
		}
		if err := w.setCurrentState(snap); err != nil {
			return fmt.Errorf("current state: %w", err)
		}
	}
	if len(b.HostLog) > 0 {
		if res.HostLog, err = w.db.appendHostLog(w.t, b.HostLog, w.rows); err != nil {
			return err
		}
	}
	if w.t.shared == nil {
		// A merged group writes its shared rows once, at its end.
		if err := w.flushAll(); err != nil {
			return err
		}
	}
	w.t.lastNID = w.nextNID
	return nil
}

// loadKnown finds which non-outlier events of the batch have a row
// already; the others are new and take the multi-row path.
func (w *wtx) loadKnown(b Batch) error {
	w.known = make(map[string]bool)
	var ids []string
	for _, ne := range b.Events {
		if ne.Outcome != Outlier && !ne.Absent {
			ids = append(ids, ne.Event.EventID())
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if len(ids) == 1 {
		// A local event or a lone PDU: one index lookup, or none when the
		// number is cached (the row exists).
		if _, ok := w.db.nids.get(ids[0]); ok {
			w.known[ids[0]] = true
			return nil
		}
		var nid int64
		err := w.t.queryRow(w.db.d.lookupEventNID, ids[0]).Scan(&nid)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		w.known[ids[0]] = err == nil
		return err
	}
	rows, err := w.t.query(w.db.d.existingEventIDs, idsJSON(ids))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		w.known[id] = true
	}
	return rows.Err()
}

// autoNumbered runs before a statement that lets the database number an
// event row: rows numbered by nextNID must be in the table first.
func (w *wtx) autoNumbered() error {
	return w.flush(w.newEvents)
}

// numbered records a number the database gave an event row.
func (w *wtx) numbered(nid int64) {
	w.nextNID = max(w.nextNID, nid)
}

// prefetchStateKeys numbers, with multi-row INSERTs, the state keys of a
// batch that are not cached, when there are many (a join's state).
func (w *wtx) prefetchStateKeys(b Batch) error {
	var missing []StateKey
	want := make(map[StateKey]bool)
	w.db.mu.Lock()
	consider := func(k StateKey) {
		if _, ok := w.db.stateKeys[k]; !ok && !want[k] {
			want[k] = true
			missing = append(missing, k)
		}
	}
	for _, ne := range b.Events {
		if sk, ok := ne.Event.StateKey(); ok {
			consider(StateKey{ne.Event.Type(), sk})
		}
		if ne.StateBefore != nil {
			for k := range ne.StateBefore.Changes {
				consider(k)
			}
		}
	}
	if b.CurrentState != nil {
		for k := range b.CurrentState.Changes {
			consider(k)
		}
	}
	w.db.mu.Unlock()
	if len(missing) < 16 {
		return nil
	}
	for len(missing) > 0 {
		n := pow2Chunk(len(missing))
		args := make([]any, 0, 2*n)
		for _, k := range missing[:n] {
			args = append(args, k.Type, k.StateKey)
		}
		rows, err := w.t.query(w.db.d.multiInsert(w.db.d.stateKeyRows, n), args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var nid int64
			var k StateKey
			if err := rows.Scan(&nid, &k.Type, &k.StateKey); err != nil {
				rows.Close()
				return err
			}
			w.newKeys[k] = nid
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		missing = missing[n:]
	}
	return nil
}

func batchRoom(b Batch) (roomID, version string, err error) {
	for _, ne := range b.Events {
		if ne.Event == nil {
			return "", "", errors.New("batch has a nil event")
		}
		rid, ver := ne.Event.RoomID(), ne.Event.Version().ID
		if roomID == "" {
			roomID, version = rid, ver
			continue
		}
		if rid != roomID {
			return "", "", fmt.Errorf("batch mixes rooms %s and %s", roomID, rid)
		}
		if ver != version {
			return "", "", fmt.Errorf("batch mixes room versions %s and %s", version, ver)
		}
	}
	if roomID == "" && b.CurrentState != nil {
		return "", "", errors.New("current state given without events")
	}
	return roomID, version, nil
}

// ensureRoom returns the room's number, making the row if it is new. A
// room held under another version is a conflict.
func (db *DB) ensureRoom(t *txn, roomID, version, status string) (int64, error) {
	var nid int64
	var have string
	err := t.queryRow(db.d.lookupRoom, roomID).Scan(&nid, &have)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := rooms.LookupVersion(version); err != nil {
			return 0, err
		}
		if err := t.queryRow(db.d.insertRoom, roomID, version, status, db.now()).Scan(&nid); err != nil {
			return 0, fmt.Errorf("room %s: %w", roomID, err)
		}
		return nid, nil
	case err != nil:
		return 0, fmt.Errorf("room %s: %w", roomID, err)
	case have != version:
		return 0, fmt.Errorf("%w: room %s is version %s, not %s", ErrConflict, roomID, have, version)
	}
	if status != "" {
		if _, err := t.exec(db.d.setRoomStatus, status, nid); err != nil {
			return 0, err
		}
	}
	return nid, nil
}

// persistOne writes one event; it reports false for an event already held.
func (w *wtx) persistOne(ne *NewEvent) (bool, error) {
	ev := ne.Event
	var before sql.NullInt64
	outlier := 0
	var rejected sql.NullString
	switch ne.Outcome {
	case Accepted, SoftFailed:
		if ne.StateBefore == nil {
			return false, fmt.Errorf("%s event without the state before it", ne.Outcome)
		}
	case Rejected:
		rejected = sql.NullString{String: ne.RejectedReason, Valid: true}
		if rejected.String == "" {
			rejected.String = "rejected"
		}
		if ne.StateBefore == nil {
			outlier = 1
		}
	case Outlier:
		outlier = 1
	default:
		return false, fmt.Errorf("unknown outcome %d", ne.Outcome)
	}
	if outlier == 0 {
		snap, err := w.resolveState(ne.StateBefore)
		if err != nil {
			return false, fmt.Errorf("state before: %w", err)
		}
		before = sql.NullInt64{Int64: snap, Valid: true}
	}
	var skNID int64
	if sk, ok := ev.StateKey(); ok {
		var err error
		if skNID, err = w.stateKeyNID(StateKey{ev.Type(), sk}); err != nil {
			return false, err
		}
	}
	var membership sql.NullString
	if m := ev.Membership(); m != "" {
		membership = sql.NullString{String: m, Valid: true}
	}
	softFailed := 0
	if ne.Outcome == SoftFailed {
		softFailed = 1
	}
	_, placeholder := w.eventNIDs[ev.EventID()]
	fresh := !placeholder && !w.known[ev.EventID()]
	var nid int64
	if fresh {
		w.nextNID++
		nid = w.nextNID
		if err := w.add(w.newEvents, nid, ev.EventID(), w.roomNID, skNID, membership,
			ev.Depth(), ev.OriginServerTS(), outlier, rejected, softFailed, before, ev.JSON()); err != nil {
			return false, err
		}
	} else {
		if err := w.autoNumbered(); err != nil {
			return false, err
		}
		var id string
		err := w.t.queryRow(w.db.d.multiInsert(w.db.d.eventRows, 1), ev.EventID(), w.roomNID, skNID, membership,
			ev.Depth(), ev.OriginServerTS(), outlier, rejected, softFailed, before, ev.JSON()).Scan(&nid, &id)
		if errors.Is(err, sql.ErrNoRows) {
			// Held already (and not an outlier being promoted).
			_, err := w.eventNID(ev.EventID())
			return false, err
		}
		if err != nil {
			return false, err
		}
		w.numbered(nid)
	}
	w.eventNIDs[ev.EventID()] = nid
	w.rows[ev.EventID()] = &eventRow{nid: nid, stateKey: skNID, held: true, outlier: outlier == 1,
		rejected: rejected.Valid, before: before, changed: true}
	prevNIDs, err := w.addEdges(nid, ev)
	if err != nil {
		return false, err
	}
	if ne.Outcome == Accepted {
		if err := w.updateExtremities(nid, prevNIDs, fresh); err != nil {
			return false, err
		}
	}
	for _, dest := range ne.Destinations {
		if err := w.add(w.outbound, dest, nid); err != nil {
			return false, err
		}
	}
	return true, nil
}

// addEdges buffers the prev and auth edges of event nid and returns the
// numbers of its prev events.
func (w *wtx) addEdges(nid int64, ev *rooms.Event) ([]int64, error) {
	prevNIDs := make([]int64, 0, len(ev.PrevEvents()))
	for _, id := range ev.PrevEvents() {
		p, err := w.eventNID(id)
		if err != nil {
			return nil, err
		}
		prevNIDs = append(prevNIDs, p)
		if err := w.add(w.prevEdges, nid, p); err != nil {
			return nil, err
		}
	}
	for _, id := range ev.AuthEvents() {
		a, err := w.eventNID(id)
		if err != nil {
			return nil, err
		}
		if err := w.add(w.authEdges, nid, a); err != nil {
			return nil, err
		}
	}
	return prevNIDs, nil
}

func (w *wtx) updateExtremities(nid int64, prevs []int64, fresh bool) error {
	if w.ext == nil {
		if err := w.loadExtremities(); err != nil {
			return err
		}
	}
	for _, p := range prevs {
		w.followed[p] = true
		delete(w.ext, p)
	}
	if w.followed[nid] {
		return nil
	}
	if !fresh {
		// A held event of an earlier transaction may follow it.
		if err := w.flushAll(); err != nil {
			return err
		}
		var n int64
		if err := w.t.queryRow(w.db.d.heldFollowers, nid).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
	w.ext[nid] = true
	return nil
}

// writeExtremities stores the changes made to the forward extremities.
// extremityIDs returns the room's forward extremities as the transaction
// leaves them, sorted; nil when it did not look at them (no accepted
// event).
func (w *wtx) extremityIDs() []string {
	if w.ext == nil {
		return nil
	}
	ids := make([]string, 0, len(w.ext))
	for id, nid := range w.eventNIDs {
		if w.ext[nid] {
			ids = append(ids, id)
		}
	}
	if len(ids) != len(w.ext) {
		return nil // a number without its ID here: the caller reads them
	}
	slices.Sort(ids)
	return ids
}

func (w *wtx) writeExtremities() error {
	for e := range w.ext {
		if !w.extAtStart[e] {
			if err := w.add(w.addedExts, w.roomNID, e); err != nil {
				return err
			}
		}
	}
	for e := range w.extAtStart {
		if !w.ext[e] {
			if err := w.add(w.droppedExts, w.roomNID, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadExtremities reads the room's forward extremities: from the cache
// when the last committed write left them there and this transaction has
// not written the room yet, else from the table (after writing what is
// buffered, which may be an earlier write of the room in this group).
func (w *wtx) loadExtremities() error {
	w.ext, w.extAtStart = make(map[int64]bool), make(map[int64]bool)
	if w.t.extWrites == nil {
		w.t.extWrites = make(map[int64]int)
	}
	w.t.extWrites[w.roomNID]++
	if w.t.extWrites[w.roomNID] == 1 {
		if cached, ok := w.db.exts.get(w.roomNID); ok {
			for e, id := range cached {
				w.ext[e], w.extAtStart[e] = true, true
				w.eventNIDs[id] = e
			}
			return nil
		}
	} else if err := w.flushAll(); err != nil {
		return err
	}
	rows, err := w.t.query(w.db.d.extremityNIDs, w.roomNID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var e int64
		var id string
		if err := rows.Scan(&e, &id); err != nil {
			return err
		}
		w.ext[e], w.extAtStart[e] = true, true
		w.eventNIDs[id] = e
	}
	return rows.Err()
}

// committedExtremities is what the cache should hold for the room once
// this write is committed: its extremities, or nil (forget the room) when
// the transaction wrote the room more than once or an ID is not known.
func (w *wtx) committedExtremities() map[int64]string {
	if w.t.extWrites[w.roomNID] != 1 {
		return nil
	}
	out := make(map[int64]string, len(w.ext))
	for id, nid := range w.eventNIDs {
		if w.ext[nid] {
			out[nid] = id
		}
	}
	if len(out) != len(w.ext) {
		return nil
	}
	return out
}
