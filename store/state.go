package store

import (
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sort"
)

// snapNode is one state_snapshots row.
type snapNode struct {
	nid       int64
	parent    int64 // 0: a full snapshot
	span      int64 // snapshots merged into the node (0 for a full one)
	rows      int64
	chainRows int64
	fullRows  int64
}

func (n snapNode) full() bool { return n.parent == 0 }

// bigChange is the size of a change above which checking it against the
// parent loads the parent's whole state instead of looking keys up one by
// one along the chain.
const bigChange = 256

// chain returns the nodes from snapshot nid up to its full root, leaf first.
func (db *DB) chain(t *txn, nid int64) ([]snapNode, error) {
	if nid == 0 {
		return nil, nil
	}
	rows, err := t.query(db.d.snapshotChain, nid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []snapNode
	for rows.Next() {
		var n snapNode
		var parent sql.NullInt64
		if err := rows.Scan(&n.nid, &parent, &n.span, &n.rows, &n.chainRows, &n.fullRows); err != nil {
			return nil, err
		}
		n.parent = parent.Int64
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 || !out[len(out)-1].full() {
		return nil, fmt.Errorf("snapshot %d: broken chain", nid)
	}
	return out, nil
}

// nodeEntries returns the entries of one snapshot node (0 marks removal).
func (db *DB) nodeEntries(t *txn, nid int64) (map[int64]int64, error) {
	rows, err := t.query(db.d.stateEntries, nid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[int64]int64)
	for rows.Next() {
		var k, v int64
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, rows.Err()
}

// loadState returns the full state of a chain as state key → event numbers.
func (db *DB) loadState(t *txn, chain []snapNode) (map[int64]int64, error) {
	var size int64
	if len(chain) > 0 {
		size = chain[len(chain)-1].rows
	}
	out := make(map[int64]int64, size)
	seen := make(map[int64]bool)
	for i, n := range chain {
		root := i == len(chain)-1
		rows, err := t.query(db.d.stateEntries, n.nid)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var k, v int64
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
				return nil, err
			}
			if !root {
				if seen[k] {
					continue
				}
				seen[k] = true
			} else if seen[k] {
				continue
			}
			if v != 0 {
				out[k] = v
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// valueAt returns the event holding key sk in the state of chain (0: none).
func (db *DB) valueAt(t *txn, chain []snapNode, sk int64) (int64, error) {
	for _, n := range chain {
		var v int64
		err := t.queryRow(db.d.stateEntry, n.nid, sk).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		return v, err
	}
	return 0, nil
}

// eventRow is what the state code needs of an events row.
type eventRow struct {
	nid      int64
	stateKey int64
	held     bool
	outlier  bool
	rejected bool
	before   sql.NullInt64
	after    sql.NullInt64
	// changed marks a row this transaction wrote or changed: what it
	// publishes to the row cache once committed.
	changed bool
}

func (db *DB) eventRow(t *txn, id string) (eventRow, error) {
	var r eventRow
	err := t.queryRow(db.d.eventStateRow, id).Scan(&r.nid, &r.stateKey, &r.held, &r.outlier, &r.rejected, &r.before, &r.after)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !r.held) {
		return r, fmt.Errorf("event %s: %w", id, ErrNotFound)
	}
	return r, err
}

// resolveState turns a StateRef into a snapshot number, writing a
// snapshot node when the state is new.
func (w *wtx) resolveState(ref *StateRef) (int64, error) {
	var base int64
	switch {
	case ref.AfterEvent != "":
		r, err := w.eventRow(ref.AfterEvent)
		if err != nil {
			return 0, err
		}
		if base, err = w.stateAfter(r, ref.AfterEvent); err != nil {
			return 0, err
		}
	case ref.BeforeEvent != "":
		r, err := w.eventRow(ref.BeforeEvent)
		if err != nil {
			return 0, err
		}
		if !r.before.Valid {
			return 0, fmt.Errorf("event %s: %w", ref.BeforeEvent, ErrNoState)
		}
		base = r.before.Int64
	}
	if len(ref.Changes) == 0 {
		return base, nil
	}
	if err := w.lookUpEventNIDs(ref.Changes); err != nil {
		return 0, err
	}
	changes := make(map[int64]int64, len(ref.Changes))
	for k, id := range ref.Changes {
		sk, err := w.stateKeyNID(k)
		if err != nil {
			return 0, err
		}
		var ev int64
		if id != "" {
			if ev, err = w.eventNID(id); err != nil {
				return 0, err
			}
		}
		changes[sk] = ev
	}
	return w.addSnapshot(base, changes)
}

// eventNIDsByIDs reads the numbers of the events of a JSON list of IDs
// (placeholders included: an event's number is given once).
const eventNIDsByIDs = `SELECT event_id, event_nid FROM events WHERE event_id IN (SELECT value FROM json_each(?))`

// nidLookupChunk bounds the IDs of one eventNIDsByIDs query.
const nidLookupChunk = 8192

// lookUpEventNIDs reads the numbers of the events a state names that this
// transaction does not know yet, a few thousand per query: a big room's
// state (a join's, 100,000 members) would otherwise cost a query per
// event. IDs not in the store are left to eventNID (a placeholder).
func (w *wtx) lookUpEventNIDs(state StateMap) error {
	var missing []string
	for _, id := range state {
		if id == "" {
			continue
		}
		if _, ok := w.eventNIDs[id]; ok {
			continue
		}
		if nid, ok := w.db.nids.get(id); ok {
			w.eventNIDs[id] = nid
			continue
		}
		missing = append(missing, id)
	}
	if len(missing) < 64 {
		return nil // a few single lookups cost less than the JSON
	}
	for len(missing) > 0 {
		n := min(len(missing), nidLookupChunk)
		rows, err := w.t.query(eventNIDsByIDs, idsJSON(missing[:n]))
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			var nid int64
			if err := rows.Scan(&id, &nid); err != nil {
				rows.Close()
				return err
			}
			w.eventNIDs[id] = nid
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		missing = missing[n:]
	}
	return nil
}

// eventRow reads an events row, from the rows this transaction wrote
// when it can.
func (w *wtx) eventRow(id string) (*eventRow, error) {
	if r, ok := w.rows[id]; ok {
		return r, nil
	}
	if r, ok := w.db.eventRows.get(id); ok {
		w.rows[id] = &r
		return &r, nil
	}
	r, err := w.db.eventRow(w.t, id)
	if err != nil {
		return nil, err
	}
	w.rows[id] = &r
	return &r, nil
}

// stateAfter returns the snapshot of the state after an event, writing it
// (and remembering it on the event row) the first time it is needed.
func (w *wtx) stateAfter(r *eventRow, id string) (int64, error) {
	if r.after.Valid {
		return r.after.Int64, nil
	}
	if !r.before.Valid {
		return 0, fmt.Errorf("event %s: %w", id, ErrNoState)
	}
	if r.stateKey == 0 || r.rejected {
		return r.before.Int64, nil
	}
	snap, err := w.addSnapshot(r.before.Int64, map[int64]int64{r.stateKey: r.nid})
	if err != nil {
		return 0, err
	}
	if err := w.flush(w.newEvents); err != nil {
		return 0, err
	}
	if _, err := w.t.exec(w.db.d.setAfterSnapshot, snap, r.nid); err != nil {
		return 0, err
	}
	r.after = sql.NullInt64{Int64: snap, Valid: true}
	r.changed = true
	return snap, nil
}

// addSnapshot returns the snapshot of parent's state with changes applied
// (event 0 removes a key), writing a node unless nothing changes.
//
// The new node absorbs the tail of the parent chain whose spans equal its
// own, doubling its span each time (a binary counter), so chains stay at
// most log2(n)+1 long. When the delta entries below the full root would
// exceed max(MinDeltaRows, FullSnapshotRatio × root entries), a new full
// snapshot is written instead.
func (w *wtx) addSnapshot(parent int64, changes map[int64]int64) (int64, error) {
	t, db := w.t, w.db
	chain, err := db.chain(t, parent)
	if err != nil {
		return 0, err
	}
	var full map[int64]int64
	if len(chain) > 0 && len(changes) > bigChange {
		if full, err = db.loadState(t, chain); err != nil {
			return 0, err
		}
	}
	delta := make(map[int64]int64, len(changes))
	for k, v := range changes {
		var cur int64
		switch {
		case full != nil:
			cur = full[k]
		case len(chain) > 0:
			if cur, err = db.valueAt(t, chain, k); err != nil {
				return 0, err
			}
		}
		if cur != v {
			delta[k] = v
		}
	}
	if len(delta) == 0 {
		return parent, nil
	}
	if len(chain) == 0 {
		return w.writeFull(delta)
	}
	span := int64(1)
	i := 0
	for ; !chain[i].full() && chain[i].span == span; i++ {
		entries, err := db.nodeEntries(t, chain[i].nid)
		if err != nil {
			return 0, err
		}
		for k, v := range entries {
			if _, ok := delta[k]; !ok {
				delta[k] = v
			}
		}
		span *= 2
	}
	up := chain[i]
	chainRows := up.chainRows + int64(len(delta))
	limit := int64(math.Max(float64(db.opts.MinDeltaRows), db.opts.FullSnapshotRatio*float64(up.fullRows)))
	if chainRows > limit {
		if full == nil {
			if full, err = db.loadState(t, chain); err != nil {
				return 0, err
			}
		}
		for k, v := range changes {
			if v == 0 {
				delete(full, k)
			} else {
				full[k] = v
			}
		}
		return w.writeFull(full)
	}
	var nid int64
	if err := t.queryRow(db.d.insertSnapshot, w.roomNID, up.nid, span, len(delta), chainRows, up.fullRows).Scan(&nid); err != nil {
		return 0, err
	}
	return nid, w.writeEntries(nid, delta)
}

// writeFull writes a full snapshot of state (removal entries are dropped).
func (w *wtx) writeFull(state map[int64]int64) (int64, error) {
	n := 0
	for _, v := range state {
		if v != 0 {
			n++
		}
	}
	var nid int64
	if err := w.t.queryRow(w.db.d.insertSnapshot, w.roomNID, nil, 0, n, 0, n).Scan(&nid); err != nil {
		return 0, err
	}
	return nid, w.writeEntries(nid, state)
}

func (w *wtx) writeEntries(snap int64, entries map[int64]int64) error {
	keys := make([]int64, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		if err := w.add(w.entries, snap, k, entries[k]); err != nil {
			return err
		}
	}
	return w.flush(w.entries)
}

// stateDiff returns the entries that take the state of snapshot from to
// that of snapshot to (0: remove the key). When both share a chain node
// only the nodes below it are read.
func (db *DB) stateDiff(t *txn, from, to int64) (map[int64]int64, error) {
	toChain, err := db.chain(t, to)
	if err != nil {
		return nil, err
	}
	fromChain, err := db.chain(t, from)
	if err != nil {
		return nil, err
	}
	idx := make(map[int64]int, len(fromChain))
	for i, n := range fromChain {
		idx[n.nid] = i
	}
	ci, cj := -1, -1
	for j, n := range toChain {
		if i, ok := idx[n.nid]; ok {
			ci, cj = i, j
			break
		}
	}
	if ci < 0 {
		a, err := db.loadState(t, fromChain)
		if err != nil {
			return nil, err
		}
		b, err := db.loadState(t, toChain)
		if err != nil {
			return nil, err
		}
		diff := make(map[int64]int64)
		for k, v := range b {
			if a[k] != v {
				diff[k] = v
			}
		}
		for k := range a {
			if _, ok := b[k]; !ok {
				diff[k] = 0
			}
		}
		return diff, nil
	}
	overlay := func(nodes []snapNode) (map[int64]int64, error) {
		out := make(map[int64]int64)
		for _, n := range nodes {
			e, err := db.nodeEntries(t, n.nid)
			if err != nil {
				return nil, err
			}
			for k, v := range e {
				if _, ok := out[k]; !ok {
					out[k] = v
				}
			}
		}
		return out, nil
	}
	oldDelta, err := overlay(fromChain[:ci])
	if err != nil {
		return nil, err
	}
	newDelta, err := overlay(toChain[:cj])
	if err != nil {
		return nil, err
	}
	common := toChain[cj:]
	diff := make(map[int64]int64)
	check := func(k int64) error {
		if _, done := diff[k]; done {
			return nil
		}
		ov, okOld := oldDelta[k]
		nv, okNew := newDelta[k]
		var base int64
		if !okOld || !okNew {
			var err error
			if base, err = db.valueAt(t, common, k); err != nil {
				return err
			}
		}
		if !okOld {
			ov = base
		}
		if !okNew {
			nv = base
		}
		if ov != nv {
			diff[k] = nv
		}
		return nil
	}
	for k := range oldDelta {
		if err := check(k); err != nil {
			return nil, err
		}
	}
	for k := range newDelta {
		if err := check(k); err != nil {
			return nil, err
		}
	}
	return diff, nil
}

// setCurrentState makes snapshot snap the room's current state and brings
// current_state up to date with the difference.
func (w *wtx) setCurrentState(snap int64) error {
	var old int64
	if err := w.t.queryRow(w.db.d.roomCurrentSnapshot, w.roomNID).Scan(&old); err != nil {
		return err
	}
	if old == snap {
		return nil
	}
	diff, err := w.db.stateDiff(w.t, old, snap)
	if err != nil {
		return err
	}
	keys := make([]int64, 0, len(diff))
	for k := range diff {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		if v := diff[k]; v == 0 {
			_, err = w.t.exec(w.db.d.deleteCurrentState, w.roomNID, k)
		} else {
			err = w.add(w.current, w.roomNID, k, v)
		}
		if err != nil {
			return err
		}
	}
	if err := w.flush(w.current); err != nil {
		return err
	}
	_, err = w.t.exec(w.db.d.setRoomCurrentSnapshot, snap, w.roomNID)
	return err
}
