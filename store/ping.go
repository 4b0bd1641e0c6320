package store

import (
	"context"
	"fmt"
)

// Ping checks that the database answers a query on a reader and that the
// writer connection is alive, for readiness probes.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.readers.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping readers: %w", err)
	}
	if err := db.writer.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping writer: %w", err)
	}
	return nil
}
