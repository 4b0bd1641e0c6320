package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// hostQueries are the statements of the host plane's reads and writes.
// They live apart from the dialect's main table; a second SQL backend
// gives its own value.
type hostQueries struct {
	deleteUser, userRooms          string
	localTxn, insertLocalTxn       string
	timelineBefore, timelineAfter  string
	timelineNewest, timelineOldest string
	timelineAt, latestMembership   string
}

const sqliteTimelineCond = `e.outlier = 0 AND e.rejected_reason IS NULL AND e.soft_failed = 0 AND e.json IS NOT NULL`

var sqliteHostQueries = hostQueries{
	deleteUser: `DELETE FROM users WHERE user_id = ?`,
	// Rooms where the user is joined, invited or knocking: by the current
	// state, or, for rooms held without one (an invite or knock kept as
	// an outlier), by the newest membership event held for the user.
	userRooms: `WITH sk AS (SELECT state_key_nid FROM state_keys WHERE type = 'm.room.member' AND state_key = ?1)
		SELECT r.room_id FROM current_state cs JOIN rooms r ON r.room_nid = cs.room_nid
			JOIN events e ON e.event_nid = cs.event_nid
			WHERE cs.state_key_nid IN (SELECT state_key_nid FROM sk) AND e.membership IN ('join', 'invite', 'knock')
		UNION
		SELECT r.room_id FROM rooms r WHERE r.current_snapshot_nid = 0 AND (
			SELECT e.membership FROM events e WHERE e.room_nid = r.room_nid AND e.json IS NOT NULL
				AND e.state_key_nid IN (SELECT state_key_nid FROM sk) ORDER BY e.event_nid DESC LIMIT 1
		) IN ('invite', 'knock')
		ORDER BY 1`,
	localTxn:       `SELECT event_id FROM local_txns WHERE sender = ? AND txn_id = ?`,
	insertLocalTxn: `INSERT INTO local_txns (sender, txn_id, event_id, room_id, ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
	timelineBefore: `SELECT e.event_nid, e.depth, ` + sqliteEventCols + ` FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.room_nid = ?1 AND (e.depth, e.event_nid) < (?2, ?3) AND ` + sqliteTimelineCond + `
		ORDER BY e.depth DESC, e.event_nid DESC LIMIT ?4`,
	timelineAfter: `SELECT e.event_nid, e.depth, ` + sqliteEventCols + ` FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.room_nid = ?1 AND (e.depth, e.event_nid) > (?2, ?3) AND ` + sqliteTimelineCond + `
		ORDER BY e.depth ASC, e.event_nid ASC LIMIT ?4`,
	timelineNewest: `SELECT e.event_nid, e.depth, ` + sqliteEventCols + ` FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.room_nid = ?1 AND ` + sqliteTimelineCond + `
		ORDER BY e.depth DESC, e.event_nid DESC LIMIT ?2`,
	timelineOldest: `SELECT e.event_nid, e.depth, ` + sqliteEventCols + ` FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.room_nid = ?1 AND ` + sqliteTimelineCond + `
		ORDER BY e.depth ASC, e.event_nid ASC LIMIT ?2`,
	timelineAt: `SELECT e.event_nid, e.depth, ` + sqliteEventCols + ` FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.event_nid = ?2 AND e.room_nid = ?1 AND e.depth = ?3 AND ` + sqliteTimelineCond,
	latestMembership: `SELECT ` + sqliteEventCols + ` FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE r.room_id = ?1 AND e.json IS NOT NULL AND e.rejected_reason IS NULL AND e.state_key_nid =
			(SELECT state_key_nid FROM state_keys WHERE type = 'm.room.member' AND state_key = ?2)
		ORDER BY e.event_nid DESC LIMIT 1`,
}

// hq returns the host statements of the DB's dialect.
func (db *DB) hq() *hostQueries { return &sqliteHostQueries }

// DeleteUser deletes a local user; ErrNotFound if there is none.
func (db *DB) DeleteUser(ctx context.Context, userID string) error {
	err := db.write(ctx, func(t *txn) error {
		res, err := t.exec(db.hq().deleteUser, userID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("user %s: %w", userID, ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: delete user: %w", err)
	}
	return nil
}

// UserRooms returns the rooms where userID is joined, invited or
// knocking, by room ID.
func (db *DB) UserRooms(ctx context.Context, userID string) ([]string, error) {
	var out []string
	err := db.read(ctx, func(t *txn) error {
		var err error
		out, err = t.queryStrings(db.hq().userRooms, userID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: user rooms: %w", err)
	}
	return out, nil
}

// LocalTxn is a send of the host de-duplicated by (Sender, TxnID).
type LocalTxn struct {
	Sender, TxnID string
}

// LocalTxnEvent returns the event ID recorded for (sender, txnID);
// ErrNotFound if there is none.
func (db *DB) LocalTxnEvent(ctx context.Context, sender, txnID string) (string, error) {
	var id string
	err := db.read(ctx, func(t *txn) error {
		err := t.queryRow(db.hq().localTxn, sender, txnID).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("local txn %s/%s: %w", sender, txnID, ErrNotFound)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	return id, nil
}

// PersistEventsForTxn is PersistEvents for a batch holding one local
// event sent under a transaction ID: the (sender, txn ID) -> event ID row
// is written in the same transaction, so either both are committed or
// neither. A (sender, txn ID) already recorded is ErrConflict and writes
// nothing.
func (db *DB) PersistEventsForTxn(ctx context.Context, b Batch, lt LocalTxn) (PersistResult, error) {
	var res PersistResult
	if len(b.Events) != 1 {
		return res, fmt.Errorf("store: persist events for txn: %d events, want 1", len(b.Events))
	}
	ev := b.Events[0].Event
	w, err := db.writeGrouped(ctx, func(t *txn) (*wtx, error) {
		res = PersistResult{}
		r, err := t.exec(db.hq().insertLocalTxn, lt.Sender, lt.TxnID, ev.EventID(), ev.RoomID(), db.now())
		if err != nil {
			return nil, err
		}
		if n, err := r.RowsAffected(); err != nil || n == 0 {
			return nil, fmt.Errorf("local txn %s/%s: %w", lt.Sender, lt.TxnID, ErrConflict)
		}
		w := db.newWtx(t)
		return w, w.persist(b, &res)
	})
	if err != nil {
		return PersistResult{}, fmt.Errorf("store: persist events for txn: %w", err)
	}
	w.committed()
	if n := len(res.HostLog); n > 0 {
		db.hostLog.advance(res.HostLog[n-1])
	}
	return res, nil
}

// TimelinePos is an event's place in a room's timeline: topological
// (depth), then order of arrival (the event's number).
type TimelinePos struct {
	Depth int64
	NID   int64
}

// TimelineEvent is a timeline event with its place.
type TimelineEvent struct {
	Pos   TimelinePos
	Event *StoredEvent
}

// Timeline returns up to limit events of a room's timeline (accepted, not
// outliers, soft-failed or rejected) after from going forwards or before
// it going backwards (newest first); a nil from starts at the oldest
// (forwards) or newest (backwards) event.
func (db *DB) Timeline(ctx context.Context, roomID string, from *TimelinePos, backwards bool, limit int) ([]TimelineEvent, error) {
	var out []TimelineEvent
	err := db.read(ctx, func(t *txn) error {
		roomNID, err := db.roomNID(t, roomID)
		if err != nil {
			return err
		}
		var rows *sql.Rows
		switch {
		case from == nil && backwards:
			rows, err = t.query(db.hq().timelineNewest, roomNID, limit)
		case from == nil:
			rows, err = t.query(db.hq().timelineOldest, roomNID, limit)
		case backwards:
			rows, err = t.query(db.hq().timelineBefore, roomNID, from.Depth, from.NID, limit)
		default:
			rows, err = t.query(db.hq().timelineAfter, roomNID, from.Depth, from.NID, limit)
		}
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var te TimelineEvent
			se, err := scanEvent(rows, &te.Pos.NID, &te.Pos.Depth)
			if err != nil {
				return err
			}
			te.Event = se
			out = append(out, te)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: timeline: %w", err)
	}
	return out, nil
}

// TimelineAt returns the timeline event of a room at pos; ErrNotFound
// when there is none.
func (db *DB) TimelineAt(ctx context.Context, roomID string, pos TimelinePos) (TimelineEvent, error) {
	var out TimelineEvent
	err := db.read(ctx, func(t *txn) error {
		roomNID, err := db.roomNID(t, roomID)
		if err != nil {
			return err
		}
		se, err := scanEvent(t.queryRow(db.hq().timelineAt, roomNID, pos.NID, pos.Depth), &out.Pos.NID, &out.Pos.Depth)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("timeline position %d/%d: %w", pos.Depth, pos.NID, ErrNotFound)
		}
		out.Event = se
		return err
	})
	if err != nil {
		return TimelineEvent{}, fmt.Errorf("store: timeline at: %w", err)
	}
	return out, nil
}

// LatestMembership returns the newest membership event held for userID
// in roomID, outliers included (an invite or a knock kept without the
// room's state); ErrNotFound when there is none.
func (db *DB) LatestMembership(ctx context.Context, roomID, userID string) (*StoredEvent, error) {
	var se *StoredEvent
	err := db.read(ctx, func(t *txn) error {
		var err error
		se, err = scanEvent(t.queryRow(db.hq().latestMembership, roomID, userID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("membership of %s in %s: %w", userID, roomID, ErrNotFound)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: latest membership: %w", err)
	}
	return se, nil
}
