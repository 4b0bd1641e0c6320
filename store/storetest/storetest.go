// Package storetest opens real, migrated SQLite stores for tests: a file
// database in the test's temporary directory (not :memory:, which is per
// connection under database/sql), closed when the test ends.
package storetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ferry-matrix/ferry/store"
)

// Open returns a migrated store in tb's temporary directory. Options may
// tune it; the zero value gives the defaults with synchronous=NORMAL, as
// tests do not need power-loss durability.
func Open(tb testing.TB, opts ...store.Options) *store.DB {
	tb.Helper()
	var o store.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Synchronous == "" {
		o.Synchronous = "NORMAL"
	}
	db, err := store.Open(context.Background(), filepath.Join(tb.TempDir(), "ferry.db"), o)
	if err != nil {
		tb.Fatalf("storetest: open: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("storetest: close: %v", err)
		}
	})
	return db
}
