package store

import (
	"database/sql"
	"fmt"

	"github.com/ferry-matrix/ferry/rooms"
)

// persistOutliers writes outliers (no state, no extremities, no queues)
// with multi-row INSERTs, then their edges.
func (w *wtx) persistOutliers(evs []*rooms.Event, res *PersistResult) error {
	for len(evs) > 0 {
		n := pow2Chunk(len(evs))
		if err := w.persistOutlierChunk(evs[:n], res); err != nil {
			return err
		}
		evs = evs[n:]
	}
	return nil
}

func (w *wtx) persistOutlierChunk(evs []*rooms.Event, res *PersistResult) error {
	if err := w.autoNumbered(); err != nil {
		return err
	}
	args := make([]any, 0, len(evs)*len(w.db.d.eventRows.columns))
	for _, ev := range evs {
		var skNID int64
		if sk, ok := ev.StateKey(); ok {
			var err error
			if skNID, err = w.stateKeyNID(StateKey{ev.Type(), sk}); err != nil {
				return err
			}
		}
		var membership sql.NullString
		if m := ev.Membership(); m != "" {
			membership = sql.NullString{String: m, Valid: true}
		}
		args = append(args, ev.EventID(), w.roomNID, skNID, membership, ev.Depth(), ev.OriginServerTS(),
			1, nil, 0, nil, ev.JSON())
	}
	rows, err := w.t.query(w.db.d.multiInsert(w.db.d.eventRows, len(evs)), args...)
	if err != nil {
		return err
	}
	written := make(map[string]int64, len(evs))
	for rows.Next() {
		var nid int64
		var id string
		if err := rows.Scan(&nid, &id); err != nil {
			rows.Close()
			return err
		}
		written[id] = nid
		w.numbered(nid)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for id, nid := range written {
		w.eventNIDs[id] = nid
		w.rows[id] = &eventRow{nid: nid, held: true, outlier: true, changed: true}
	}
	for _, ev := range evs {
		nid, ok := written[ev.EventID()]
		if !ok {
			continue // held already
		}
		if _, err := w.addEdges(nid, ev); err != nil {
			return fmt.Errorf("event %s: %w", ev.EventID(), err)
		}
		res.Stored = append(res.Stored, ev.EventID())
	}
	return nil
}
