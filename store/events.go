package store

import (
	"container/heap"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/ferry-matrix/ferry/rooms"
)

// scanEvent reads one row of the event columns (event_id, version,
// outlier, rejected_reason, soft_failed, redacted, json), after the
// columns scanned into lead.
func scanEvent(rows interface{ Scan(...any) error }, lead ...any) (*StoredEvent, error) {
	var id, version string
	var rejected sql.NullString
	var raw []byte
	se := &StoredEvent{}
	if err := rows.Scan(append(lead, &id, &version, &se.Outlier, &rejected, &se.SoftFailed, &se.Redacted, &raw)...); err != nil {
		return nil, err
	}
	v, err := rooms.LookupVersion(version)
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", id, err)
	}
	if se.Event, err = rooms.ParseEventTrusted(v, raw, id); err != nil {
		return nil, err
	}
	se.Rejected, se.RejectedReason = rejected.Valid, rejected.String
	return se, nil
}

func idsJSON(ids []string) string {
	b, _ := json.Marshal(ids)
	return string(b)
}

func nidsJSON(nids []int64) string {
	b, _ := json.Marshal(nids)
	return string(b)
}

// Event returns a held event. A placeholder (an event referenced but not
// held) is ErrNotFound.
func (db *DB) Event(ctx context.Context, eventID string) (*StoredEvent, error) {
	var se *StoredEvent
	err := db.read(ctx, func(t *txn) error {
		var err error
		se, err = scanEvent(t.queryRow(db.d.eventByID, eventID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("event %s: %w", eventID, ErrNotFound)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return se, nil
}

// Events returns the held events among ids, in the order asked; IDs not
// held are left out.
func (db *DB) Events(ctx context.Context, ids []string) ([]*StoredEvent, error) {
	var out []*StoredEvent
	err := db.read(ctx, func(t *txn) error {
		var err error
		out, err = db.eventsByIDs(t, ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: events: %w", err)
	}
	return out, nil
}

func (db *DB) eventsByIDs(t *txn, ids []string) ([]*StoredEvent, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := t.query(db.d.eventsByIDs, idsJSON(ids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	byID := make(map[string]*StoredEvent, len(ids))
	for rows.Next() {
		se, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		byID[se.Event.EventID()] = se
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]*StoredEvent, 0, len(byID))
	for _, id := range ids {
		if se, ok := byID[id]; ok {
			out = append(out, se)
			delete(byID, id)
		}
	}
	return out, nil
}

// eventsByNIDs returns the held events among nids, in the order given.
func (db *DB) eventsByNIDs(t *txn, nids []int64) ([]*StoredEvent, error) {
	if len(nids) == 0 {
		return nil, nil
	}
	rows, err := t.query(db.d.eventsByNIDs, nidsJSON(nids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	byNID := make(map[int64]*StoredEvent, len(nids))
	for rows.Next() {
		var nid int64
		se, err := scanEvent(rows, &nid)
		if err != nil {
			return nil, err
		}
		byNID[nid] = se
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]*StoredEvent, 0, len(byNID))
	for _, n := range nids {
		if se, ok := byNID[n]; ok {
			out = append(out, se)
			delete(byNID, n)
		}
	}
	return out, nil
}

// MissingEventIDs returns the IDs among ids that are not held (placeholders
// count as not held), in the order given.
func (db *DB) MissingEventIDs(ctx context.Context, ids []string) ([]string, error) {
	unheld, err := db.UnheldEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		if _, ok := unheld[id]; ok {
			out = append(out, id)
			delete(unheld, id)
		}
	}
	return out, nil
}

// UnheldEvents returns the IDs among ids that are not held, each with
// whether the store has no row of it at all (true) or a placeholder
// (false: a held event names it). An event with no row can be written
// without looking for one (NewEvent.Absent).
func (db *DB) UnheldEvents(ctx context.Context, ids []string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	if len(ids) == 1 {
		// One PDU of a room: an index lookup, without json_each or a
		// transaction around it.
		var held bool
		err := db.readRow(ctx, db.d.eventHeld, []any{ids[0]}, &held)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			out[ids[0]] = true
		case err != nil:
			return nil, fmt.Errorf("store: unheld events: %w", err)
		case !held:
			out[ids[0]] = false
		}
		return out, nil
	}
	rowHeld := make(map[string]bool, len(ids))
	err := db.read(ctx, func(t *txn) error {
		rows, err := t.query(db.d.eventsHeld, idsJSON(ids))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var held bool
			if err := rows.Scan(&id, &held); err != nil {
				return err
			}
			rowHeld[id] = held
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: unheld events: %w", err)
	}
	for _, id := range ids {
		held, row := rowHeld[id]
		if !held {
			out[id] = !row
		}
	}
	return out, nil
}

// depthItem is an event on the walk frontier, ordered by depth.
type depthItem struct {
	nid   int64
	depth int64
}

type depthHeap []depthItem

func (h depthHeap) Len() int { return len(h) }
func (h depthHeap) Less(i, j int) bool {
	if h[i].depth != h[j].depth {
		return h[i].depth > h[j].depth
	}
	return h[i].nid > h[j].nid
}
func (h depthHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *depthHeap) Push(x any)   { *h = append(*h, x.(depthItem)) }
func (h *depthHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// walkBack walks prev_events edges backwards from start, deepest first,
// and returns up to limit held events of the room. Events in stop are
// neither returned nor walked through; start events are returned only if
// includeStart.
func (db *DB) walkBack(t *txn, roomNID int64, start []string, stop map[int64]bool, limit int, minDepth int64, includeStart bool) ([]int64, error) {
	seen := make(map[int64]bool)
	h := &depthHeap{}
	push := func(nid, depth int64) {
		if seen[nid] || stop[nid] || depth < minDepth {
			return
		}
		seen[nid] = true
		heap.Push(h, depthItem{nid, depth})
	}
	expand := func(nid int64) error {
		rows, err := t.query(db.d.prevEventsOf, nid, roomNID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p, d int64
			if err := rows.Scan(&p, &d); err != nil {
				return err
			}
			push(p, d)
		}
		return rows.Err()
	}
	starts, err := db.heldNIDs(t, roomNID, start)
	if err != nil {
		return nil, err
	}
	for _, s := range starts {
		if includeStart {
			push(s.nid, s.depth)
			continue
		}
		seen[s.nid] = true
		if err := expand(s.nid); err != nil {
			return nil, err
		}
	}
	var out []int64
	for h.Len() > 0 && len(out) < limit {
		it := heap.Pop(h).(depthItem)
		out = append(out, it.nid)
		if err := expand(it.nid); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (db *DB) heldNIDs(t *txn, roomNID int64, ids []string) ([]depthItem, error) {
	rows, err := t.query(db.d.heldNIDsInRoom, idsJSON(ids), roomNID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []depthItem
	for rows.Next() {
		var it depthItem
		if err := rows.Scan(&it.nid, &it.depth); err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

func (db *DB) roomNID(t *txn, roomID string) (int64, error) {
	var nid int64
	var version string
	err := t.queryRow(db.d.lookupRoom, roomID).Scan(&nid, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("room %s: %w", roomID, ErrNotFound)
	}
	return nid, err
}

// Backfill answers /backfill: up to limit held events of the room,
// starting with the from events themselves and walking prev_events
// backwards, deepest first. History visibility is the caller's concern.
func (db *DB) Backfill(ctx context.Context, roomID string, from []string, limit int) ([]*StoredEvent, error) {
	var out []*StoredEvent
	err := db.read(ctx, func(t *txn) error {
		room, err := db.roomNID(t, roomID)
		if err != nil {
			return err
		}
		nids, err := db.walkBack(t, room, from, nil, limit, math64Min, true)
		if err != nil {
			return err
		}
		out, err = db.eventsByNIDs(t, nids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: backfill: %w", err)
	}
	return out, nil
}

const math64Min = -1 << 63

// MissingEvents answers /get_missing_events: held events of the room
// reached by walking prev_events back from latest (latest excluded), not
// walking past earliest, at depth ≥ minDepth, up to limit, oldest first.
func (db *DB) MissingEvents(ctx context.Context, roomID string, earliest, latest []string, limit int, minDepth int64) ([]*StoredEvent, error) {
	var out []*StoredEvent
	err := db.read(ctx, func(t *txn) error {
		room, err := db.roomNID(t, roomID)
		if err != nil {
			return err
		}
		stopItems, err := db.heldNIDs(t, room, earliest)
		if err != nil {
			return err
		}
		stop := make(map[int64]bool, len(stopItems))
		for _, s := range stopItems {
			stop[s.nid] = true
		}
		nids, err := db.walkBack(t, room, latest, stop, limit, minDepth, false)
		if err != nil {
			return err
		}
		evs, err := db.eventsByNIDs(t, nids)
		if err != nil {
			return err
		}
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Event.Depth() < evs[j].Event.Depth() })
		out = evs
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: missing events: %w", err)
	}
	return out, nil
}

// Redact replaces a held event's JSON by its redacted form (the room
// version's redaction algorithm), as when a redaction of it is accepted.
// The event keeps its ID, edges and state.
func (db *DB) Redact(ctx context.Context, eventID string) error {
	err := db.write(ctx, func(t *txn) error {
		se, err := scanEvent(t.queryRow(db.d.eventByID, eventID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("event %s: %w", eventID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if se.Redacted {
			return nil
		}
		red := se.Event.Redacted().JSON()
		if red == nil {
			return fmt.Errorf("event %s: redacted form does not encode", eventID)
		}
		_, err = t.exec(db.d.redactEvent, red, eventID)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: redact: %w", err)
	}
	return nil
}

// EventNearTimestamp answers /timestamp_to_event: the room's timeline
// event (not an outlier, rejected or soft-failed) closest to ts in the
// given direction, at or after ts when forward, at or before it otherwise.
// Ties go to the event stored first (forward) or last (backward). No such
// event is ErrNotFound.
func (db *DB) EventNearTimestamp(ctx context.Context, roomID string, ts int64, forward bool) (eventID string, eventTS int64, err error) {
	query := db.d.eventAtOrBeforeTS
	if forward {
		query = db.d.eventAtOrAfterTS
	}
	err = db.read(ctx, func(t *txn) error {
		room, err := db.roomNID(t, roomID)
		if err != nil {
			return err
		}
		err = t.queryRow(query, room, ts).Scan(&eventID, &eventTS)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("no event near %d in room %s: %w", ts, roomID, ErrNotFound)
		}
		return err
	})
	if err != nil {
		return "", 0, fmt.Errorf("store: event near timestamp: %w", err)
	}
	return eventID, eventTS, nil
}
