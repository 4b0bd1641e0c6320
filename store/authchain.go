package store

import (
	"context"
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
func (db *DB) AuthDifference(ctx context.Context, sets [][]string) ([]string, error) {
	var out []string
	err := db.read(ctx, func(t *txn) error {
		count := make(map[int64]int)
		names := make(map[int64]string)
		for _, set := range sets {
			chain, err := db.authChainNIDs(t, set)
			if err != nil {
				return err
			}
			for nid, id := range chain {
				count[nid]++
				names[nid] = id
			}
		}
		for nid, n := range count {
			if n < len(sets) {
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
