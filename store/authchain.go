package store

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
)

// authChainNIDs returns the auth chain of the held events among ids: every
// event reachable through auth_events edges, the starting events excluded
// unless reachable from another. Placeholders (auth events not held) are
// left out. One recursive query walks the auth edge index.
func (db *DB) authChainNIDs(t *txn, ids []string) (map[int64]string, error) {
	out := make(map[int64]string)
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := t.query(db.d.authChain, idsJSON(ids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var nid int64
		var id string
		if err := rows.Scan(&nid, &id); err != nil {
			return nil, err
		}
		out[nid] = id
	}
	return out, rows.Err()
}

// AuthChain returns the IDs of the auth chain of the given events (what
// /event_auth and send_join's auth_chain carry), sorted.
func (db *DB) AuthChain(ctx context.Context, eventIDs []string) ([]string, error) {
	var out []string
	err := db.read(ctx, func(t *txn) error {
		chain, err := db.authChainNIDs(t, eventIDs)
		if err != nil {
			return err
		}
		out = make([]string, 0, len(chain))
		for _, id := range chain {
			out = append(out, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: auth chain: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// AuthDifference returns the auth difference of state sets, as state
// resolution v2 defines it: the events in the full auth chain of some set
// but not of every set, sorted. Each set is the event IDs of one state.
//
// Sets of one room's states share most events. The chain of the events in
// every set (C) is in every set's chain, so only the chains of the other
// events are walked; an event found in some of those chains but not all
// is in the difference unless it is also in C's chain, which is checked
// by walking auth edges forwards from it until an event of C is met. The
// whole room is not walked for two 100k-event states that differ in a few.
func (db *DB) AuthDifference(ctx context.Context, sets [][]string) ([]string, error) {
	var out []string
	err := db.read(ctx, func(t *txn) error {
		type tally struct{ sets, last int }
		inSets := make(map[string]*tally)
		for i, set := range sets {
			for _, id := range set {
				tl := inSets[id]
				if tl == nil {
					tl = &tally{}
					inSets[id] = tl
				}
				if tl.last != i+1 {
					tl.sets, tl.last = tl.sets+1, i+1
				}
			}
		}
		count := make(map[int64]int)
		names := make(map[int64]string)
		for _, set := range sets {
			var rest []string
			for _, id := range set {
				if inSets[id].sets < len(sets) {
					rest = append(rest, id)
				}
			}
			chain, err := db.authChainNIDs(t, rest)
			if err != nil {
				return err
			}
			for nid, id := range chain {
				count[nid]++
				names[nid] = id
			}
		}
		for nid, n := range count {
			if n == len(sets) {
				continue
			}
			inCommon, err := db.authAncestorOf(t, nid, func(id string) bool {
				tl := inSets[id]
				return tl != nil && tl.sets == len(sets)
			})
			if err != nil {
				return err
			}
			if !inCommon {
				out = append(out, names[nid])
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: auth difference: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// authAncestorOf reports whether event nid is in the auth chain of an
// event for which match is true: a breadth-first walk along auth edges
// forwards from nid, one indexed query per event, stopping at the first
// match (events that many cite, like the create event, match at once).
func (db *DB) authAncestorOf(t *txn, nid int64, match func(id string) bool) (bool, error) {
	seen := map[int64]bool{nid: true}
	queue := []int64{nid}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		found, err := func() (bool, error) {
			rows, err := t.query(db.d.authChildren, cur)
			if err != nil {
				return false, err
			}
			defer rows.Close()
			for rows.Next() {
				var child int64
				var id sql.NullString
				if err := rows.Scan(&child, &id); err != nil {
					return false, err
				}
				if id.Valid && match(id.String) {
					return true, nil
				}
				if !seen[child] {
					seen[child] = true
					queue = append(queue, child)
				}
			}
			return false, rows.Err()
		}()
		if found || err != nil {
			return found, err
		}
	}
	return false, nil
}
