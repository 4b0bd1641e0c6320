package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// TestInsertNumbered: event rows are written without their numbers and
// the database numbers them as the store did; when the two disagree
// (here the store skips a number) the write fails and nothing is kept.
func TestInsertNumbered(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "n.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	write := func(nids ...int64) error {
		return db.write(ctx, func(t *txn) error {
			w := db.newWtx(t)
			room, err := db.roomNIDFor(t, "!n:a.test", "10", "")
			if err != nil {
				return err
			}
			for _, nid := range nids {
				id := "$n" + strings.Repeat("x", int(nid))
				if err := w.add(w.newEvents, nid, id, room, int64(0), sql.NullString{}, int64(1), int64(1), 0, sql.NullString{}, 0, sql.NullInt64{}, []byte("{}")); err != nil {
					return err
				}
			}
			return w.flush(w.newEvents)
		})
	}
	if err := write(1, 2, 3); err != nil {
		t.Fatal(err)
	}
	err = write(5, 6)
	if err == nil || !strings.Contains(err.Error(), "numbered the last row 5, the store 6") {
		t.Fatalf("a gap in the store's numbers: %v", err)
	}
	var n, max int64
	if err := db.writer.QueryRowContext(ctx, "SELECT COUNT(*), MAX(event_nid) FROM events").Scan(&n, &max); err != nil || n != 3 || max != 3 {
		t.Fatalf("%d rows up to %d after the failed write, %v; want 3 up to 3", n, max, err)
	}
	if err := write(4, 5); err != nil {
		t.Fatal(err)
	}
}
