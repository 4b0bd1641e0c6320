package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ferry-matrix/ferry/rooms"
)

// wtx is one write transaction of PersistEvents: the tx, the room and
// caches that live as long as the transaction. Numbers learnt here reach
// the DB-wide caches only after commit.
type wtx struct {
	ctx     context.Context
	db      *DB
	tx      *sql.Tx
	roomNID int64

	eventNIDs map[string]int64
	newKeys   map[StateKey]int64

	insertEvent, lookupEvent, insertPlaceholder *sql.Stmt
	insertPrev, insertAuth, insertEntry         *sql.Stmt
	lookupKey, insertKey                        *sql.Stmt
}

func (db *DB) newWtx(ctx context.Context, tx *sql.Tx) (*wtx, error) {
	w := &wtx{ctx: ctx, db: db, tx: tx, eventNIDs: make(map[string]int64), newKeys: make(map[StateKey]int64)}
	for _, p := range []struct {
		dst **sql.Stmt
		q   string
	}{
		{&w.insertEvent, db.d.insertEvent},
		{&w.lookupEvent, db.d.lookupEventNID},
		{&w.insertPlaceholder, db.d.insertPlaceholder},
		{&w.insertPrev, db.d.insertPrevEdge},
		{&w.insertAuth, db.d.insertAuthEdge},
		{&w.insertEntry, db.d.insertStateEntry},
		{&w.lookupKey, db.d.lookupStateKey},
		{&w.insertKey, db.d.insertStateKey},
	} {
		st, err := tx.PrepareContext(ctx, p.q)
		if err != nil {
			w.close()
			return nil, err
		}
		*p.dst = st
	}
	return w, nil
}

func (w *wtx) close() {
	for _, st := range []*sql.Stmt{w.insertEvent, w.lookupEvent, w.insertPlaceholder, w.insertPrev, w.insertAuth, w.insertEntry, w.lookupKey, w.insertKey} {
		if st != nil {
			st.Close()
		}
	}
}

// committed publishes the transaction's new state-key numbers.
func (w *wtx) committed() {
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
	err := w.lookupKey.QueryRowContext(w.ctx, k.Type, k.StateKey).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		err = w.insertKey.QueryRowContext(w.ctx, k.Type, k.StateKey).Scan(&nid)
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
	var nid int64
	err := w.lookupEvent.QueryRowContext(w.ctx, id).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		err = w.insertPlaceholder.QueryRowContext(w.ctx, id, w.roomNID).Scan(&nid)
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
	var w *wtx
	err := db.write(ctx, func(tx *sql.Tx) error {
		res = PersistResult{}
		var err error
		if w, err = db.newWtx(ctx, tx); err != nil {
			return err
		}
		defer w.close()
		return w.persist(b, &res)
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
	if roomID != "" {
		if w.roomNID, err = w.db.ensureRoom(w.ctx, w.tx, roomID, version, b.RoomStatus); err != nil {
			return err
		}
	}
	for i := range b.Events {
		stored, err := w.persistOne(&b.Events[i])
		if err != nil {
			return fmt.Errorf("event %s: %w", b.Events[i].Event.EventID(), err)
		}
		if stored {
			res.Stored = append(res.Stored, b.Events[i].Event.EventID())
		}
	}
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
		if res.HostLog, err = w.db.appendHostLog(w.ctx, w.tx, b.HostLog); err != nil {
			return err
		}
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
func (db *DB) ensureRoom(ctx context.Context, tx *sql.Tx, roomID, version, status string) (int64, error) {
	var nid int64
	var have string
	err := tx.QueryRowContext(ctx, db.d.lookupRoom, roomID).Scan(&nid, &have)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := rooms.LookupVersion(version); err != nil {
			return 0, err
		}
		if err := tx.QueryRowContext(ctx, db.d.insertRoom, roomID, version, status, db.now()).Scan(&nid); err != nil {
			return 0, fmt.Errorf("room %s: %w", roomID, err)
		}
		return nid, nil
	case err != nil:
		return 0, fmt.Errorf("room %s: %w", roomID, err)
	case have != version:
		return 0, fmt.Errorf("%w: room %s is version %s, not %s", ErrConflict, roomID, have, version)
	}
	if status != "" {
		if _, err := tx.ExecContext(ctx, db.d.setRoomStatus, status, nid); err != nil {
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
	var nid int64
	err := w.insertEvent.QueryRowContext(w.ctx, ev.EventID(), w.roomNID, skNID, membership,
		ev.Depth(), ev.OriginServerTS(), outlier, rejected, softFailed, before, ev.JSON()).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		// Held already (and not an outlier being promoted).
		_, err := w.eventNID(ev.EventID())
		return false, err
	}
	if err != nil {
		return false, err
	}
	w.eventNIDs[ev.EventID()] = nid
	prevNIDs := make([]int64, 0, len(ev.PrevEvents()))
	for _, id := range ev.PrevEvents() {
		p, err := w.eventNID(id)
		if err != nil {
			return false, err
		}
		prevNIDs = append(prevNIDs, p)
		if _, err := w.insertPrev.ExecContext(w.ctx, nid, p); err != nil {
			return false, err
		}
	}
	for _, id := range ev.AuthEvents() {
		a, err := w.eventNID(id)
		if err != nil {
			return false, err
		}
		if _, err := w.insertAuth.ExecContext(w.ctx, nid, a); err != nil {
			return false, err
		}
	}
	if ne.Outcome == Accepted {
		if err := w.updateExtremities(nid, prevNIDs); err != nil {
			return false, err
		}
	}
	for _, dest := range ne.Destinations {
		if _, err := w.tx.ExecContext(w.ctx, w.db.d.enqueuePDU, dest, nid); err != nil {
			return false, err
		}
	}
	return true, nil
}

func (w *wtx) updateExtremities(nid int64, prevs []int64) error {
	for _, p := range prevs {
		if _, err := w.tx.ExecContext(w.ctx, w.db.d.deleteExtremity, w.roomNID, p); err != nil {
			return err
		}
	}
	_, err := w.tx.ExecContext(w.ctx, w.db.d.addExtremity, w.roomNID, nid)
	return err
}
