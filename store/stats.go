package store

import (
	"context"
	"database/sql"
	"fmt"
)

// Stats describes what the database holds, for operators and benchmarks.
type Stats struct {
	Events         int64 // held events (placeholders excluded)
	Snapshots      int64 // state snapshot nodes
	FullSnapshots  int64 // of which full
	StateEntries   int64 // rows of all snapshot nodes
	MaxChainLength int64 // longest chain of nodes from a snapshot to its full root, both counted
	FileBytes      int64 // database pages in use × page size (WAL excluded)
}

// Stats counts what the database holds. It reads every snapshot row, so
// it is for diagnostics, not for hot paths.
func (db *DB) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := db.read(ctx, func(t *txn) error {
		if err := t.queryRow(db.d.statsCounts).Scan(&st.Events, &st.Snapshots, &st.FullSnapshots, &st.StateEntries); err != nil {
			return err
		}
		var pages, size int64
		if err := t.queryRow(db.d.pageCount).Scan(&pages); err != nil {
			return err
		}
		if err := t.queryRow(db.d.pageSize).Scan(&size); err != nil {
			return err
		}
		st.FileBytes = pages * size
		rows, err := t.query(db.d.allSnapshotParents)
		if err != nil {
			return err
		}
		defer rows.Close()
		parent := make(map[int64]int64)
		for rows.Next() {
			var nid int64
			var p sql.NullInt64
			if err := rows.Scan(&nid, &p); err != nil {
				return err
			}
			parent[nid] = p.Int64
		}
		if err := rows.Err(); err != nil {
			return err
		}
		length := make(map[int64]int64, len(parent))
		var lenOf func(nid int64) int64
		lenOf = func(nid int64) int64 {
			if nid == 0 {
				return 0
			}
			if l, ok := length[nid]; ok {
				return l
			}
			l := lenOf(parent[nid]) + 1
			length[nid] = l
			return l
		}
		for nid := range parent {
			st.MaxChainLength = max(st.MaxChainLength, lenOf(nid))
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("store: stats: %w", err)
	}
	return st, nil
}
