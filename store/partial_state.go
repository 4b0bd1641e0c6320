package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// PartialRoom is a room joined with partial state (a send_join answer
// without most membership events) whose full state is still to be
// fetched.
type PartialRoom struct {
	RoomID string
	// JoinEventID is our join: the full state wanted is the state before
	// it.
	JoinEventID string
	// Servers are those to fetch the full state from, in order: the
	// resident that answered the join, then the answer's servers_in_room.
	Servers   []string
	CreatedTS int64
}

// MarkPartialState records that a room is being joined with partial
// state. Write it before the join itself: a crash in between leaves a row
// for a room we are not in, which ResumablePartialRooms' caller drops.
func (db *DB) MarkPartialState(ctx context.Context, p PartialRoom) error {
	servers, err := json.Marshal(p.Servers)
	if err != nil {
		return fmt.Errorf("store: mark partial state: %w", err)
	}
	err = db.write(ctx, func(t *txn) error {
		_, err := t.exec(`INSERT INTO partial_state_rooms (room_id, join_event_id, servers, created_ts) VALUES (?, ?, ?, ?)
			ON CONFLICT (room_id) DO UPDATE SET join_event_id = excluded.join_event_id, servers = excluded.servers, created_ts = excluded.created_ts`,
			p.RoomID, p.JoinEventID, string(servers), db.now())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: mark partial state of %s: %w", p.RoomID, err)
	}
	return nil
}

// ClearPartialState forgets that a room has partial state (a join that
// failed after MarkPartialState, or a row left by a crash).
func (db *DB) ClearPartialState(ctx context.Context, roomID string) error {
	err := db.write(ctx, func(t *txn) error {
		_, err := t.exec(`DELETE FROM partial_state_rooms WHERE room_id = ?`, roomID)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: clear partial state of %s: %w", roomID, err)
	}
	return nil
}

// PartialStateRoom returns the partial-state record of a room;
// ErrNotFound when the room's state is not partial.
func (db *DB) PartialStateRoom(ctx context.Context, roomID string) (PartialRoom, error) {
	var p PartialRoom
	err := db.read(ctx, func(t *txn) error {
		var servers string
		err := t.queryRow(`SELECT room_id, join_event_id, servers, created_ts FROM partial_state_rooms WHERE room_id = ?`, roomID).
			Scan(&p.RoomID, &p.JoinEventID, &servers, &p.CreatedTS)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("room %s: %w", roomID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		return json.Unmarshal([]byte(servers), &p.Servers)
	})
	if err != nil {
		return PartialRoom{}, fmt.Errorf("store: partial state: %w", err)
	}
	return p, nil
}

// PartialStateRooms returns every room whose state is partial, by room
// ID.
func (db *DB) PartialStateRooms(ctx context.Context) ([]PartialRoom, error) {
	var out []PartialRoom
	err := db.read(ctx, func(t *txn) error {
		rows, err := t.query(`SELECT room_id, join_event_id, servers, created_ts FROM partial_state_rooms ORDER BY room_id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p PartialRoom
			var servers string
			if err := rows.Scan(&p.RoomID, &p.JoinEventID, &servers, &p.CreatedTS); err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(servers), &p.Servers); err != nil {
				return fmt.Errorf("room %s servers: %w", p.RoomID, err)
			}
			out = append(out, p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: partial state rooms: %w", err)
	}
	return out, nil
}

// EventsSince returns the held, non-outlier events of a room stored after
// eventID (itself excluded) that have a state before them, in the order
// they were stored: the events a partial-state room took in after its
// join, whose states are recomputed once the full state is known.
func (db *DB) EventsSince(ctx context.Context, roomID, eventID string) ([]string, error) {
	var out []string
	err := db.read(ctx, func(t *txn) error {
		r, err := db.eventRow(t, eventID)
		if err != nil {
			return err
		}
		out, err = t.queryStrings(`SELECT e.event_id FROM events e JOIN rooms r ON r.room_nid = e.room_nid
			WHERE r.room_id = ? AND e.event_nid > ? AND e.json IS NOT NULL AND e.outlier = 0 AND e.before_snapshot_nid IS NOT NULL
			ORDER BY e.event_nid`, roomID, r.nid)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: events since %s: %w", eventID, err)
	}
	return out, nil
}

// Restated is a held event whose state before is replaced.
type Restated struct {
	EventID     string
	StateBefore StateRef
	// RejectedReason, when set, rejects the event from now on: taken in
	// under partial state, it fails auth against its full state before.
	// Its state after is then its state before.
	RejectedReason string
}

// CompletePartialState installs the full state of a room joined with
// partial state, in one transaction: each event of evs (in order; a
// StateRef may name an earlier one) gets its new state before (and its
// state after is recomputed from it), current becomes the room's current
// state, and the room's partial-state record is deleted. An event with a
// RejectedReason is rejected from then on. The events must
// be held already (the full state's events persisted as outliers first).
func (db *DB) CompletePartialState(ctx context.Context, roomID string, evs []Restated, current StateRef) error {
	w, err := db.writeGrouped(ctx, func(t *txn) (*wtx, error) {
		w := db.newWtx(t)
		return w, w.restate(roomID, evs, &current)
	})
	if err != nil {
		return fmt.Errorf("store: complete partial state of %s: %w", roomID, err)
	}
	w.committed()
	return nil
}

// RestateEvents replaces the states before held events of a room (as
// CompletePartialState does) without touching the room's current state
// or its partial-state record: the big first step of a completion (the
// full state before the join) can be written without holding up the
// room, and the rest completed after.
func (db *DB) RestateEvents(ctx context.Context, roomID string, evs []Restated) error {
	w, err := db.writeGrouped(ctx, func(t *txn) (*wtx, error) {
		w := db.newWtx(t)
		return w, w.restate(roomID, evs, nil)
	})
	if err != nil {
		return fmt.Errorf("store: restate events of %s: %w", roomID, err)
	}
	w.committed()
	return nil
}

// restate writes the new states of evs; with current, it also sets the
// room's current state and drops its partial-state record.
func (w *wtx) restate(roomID string, evs []Restated, current *StateRef) error {
	if w.t.lastNID > 0 {
		w.nextNID = w.t.lastNID
	} else if err := w.t.queryRow(w.db.d.maxEventNID).Scan(&w.nextNID); err != nil {
		return err
	}
	var version string
	if err := w.t.queryRow(`SELECT room_nid, version FROM rooms WHERE room_id = ?`, roomID).Scan(&w.roomNID, &version); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("room %s: %w", roomID, ErrNotFound)
		}
		return err
	}
	w.roomID, w.roomVersion = roomID, version
	for i := range evs {
		re := &evs[i]
		r, err := w.eventRow(re.EventID)
		if err != nil {
			return err
		}
		if r.outlier {
			return fmt.Errorf("event %s is an outlier: it has no state to replace", re.EventID)
		}
		snap, err := w.resolveState(&re.StateBefore)
		if err != nil {
			return fmt.Errorf("state before %s: %w", re.EventID, err)
		}
		if err := w.flush(w.entries); err != nil {
			return err
		}
		if _, err := w.t.exec(`UPDATE events SET before_snapshot_nid = ?, after_snapshot_nid = NULL WHERE event_nid = ?`, snap, r.nid); err != nil {
			return err
		}
		r.before = sql.NullInt64{Int64: snap, Valid: true}
		r.after = sql.NullInt64{}
		r.changed = true
		if re.RejectedReason != "" {
			if _, err := w.t.exec(`UPDATE events SET rejected_reason = ?, soft_failed = 0 WHERE event_nid = ?`, re.RejectedReason, r.nid); err != nil {
				return err
			}
			r.rejected = true
		}
	}
	if current != nil {
		snap, err := w.resolveState(current)
		if err != nil {
			return fmt.Errorf("current state: %w", err)
		}
		if err := w.setCurrentState(snap); err != nil {
			return fmt.Errorf("current state: %w", err)
		}
		if _, err := w.t.exec(`DELETE FROM partial_state_rooms WHERE room_id = ?`, roomID); err != nil {
			return err
		}
	}
	if err := w.flushAll(); err != nil {
		return err
	}
	w.t.lastNID = w.nextNID
	return nil
}
