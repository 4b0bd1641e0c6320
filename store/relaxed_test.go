package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestWriteRelaxed_RestoresSynchronous: relaxed bookkeeping writes, mixed
// with ordinary writes from other goroutines, leave the writer's
// connection at the configured synchronous setting, and what they wrote is
// there after the store is reopened.
func TestWriteRelaxed_RestoresSynchronous(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ferry.db")
	db, err := Open(ctx, path, Options{Synchronous: "FULL"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Go(func() {
			dest := fmt.Sprintf("d%d.test", i)
			if err := db.BeginTxn(ctx, dest, "t1", []byte(`{}`), []int64{int64(i)}); err != nil {
				errs <- err
			}
			if err := db.RecordFailure(ctx, dest, time.UnixMilli(1000), "refused"); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			if err := db.EnqueueEDU(ctx, []string{"other.test"}, []byte(`{"edu_type":"m.typing"}`)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var level int
	if err := db.writer.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&level); err != nil || level != 2 {
		t.Fatalf("writer synchronous = %d, %v; want 2 (FULL)", level, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(ctx, path, Options{Synchronous: "FULL"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := db.Destination(ctx, "d7.test")
	if err != nil || d.TxnID != "t1" || d.Failures != 1 || d.LastError != "refused" {
		t.Fatalf("after reopening: %+v, %v", d, err)
	}
}
