package store

import (
	"context"
	"fmt"
)

// Gauges are the quantities a metrics scrape reports of the database:
// cheap counts, unlike Stats.
type Gauges struct {
	Rooms         int64 // rooms with a current state (we are or were in them)
	JoinedServers int64 // distinct servers with a joined member in any of them
	HostLogHead   int64 // position of the newest host log entry
	Outbound      int64 // PDUs and EDUs queued for other servers
}

// Gauges counts what a metrics scrape reports.
func (db *DB) Gauges(ctx context.Context) (Gauges, error) {
	var g Gauges
	err := db.read(ctx, func(t *txn) error {
		return t.queryRow(db.d.gauges).Scan(&g.Rooms, &g.JoinedServers, &g.HostLogHead, &g.Outbound)
	})
	if err != nil {
		return Gauges{}, fmt.Errorf("store: gauges: %w", err)
	}
	return g, nil
}
