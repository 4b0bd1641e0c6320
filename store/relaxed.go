package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"time"
)

// writeRelaxed runs fn in a write transaction whose commit is not
// flushed to disk on its own (SQLite synchronous=NORMAL for that one
// commit, when the store runs FULL). In WAL mode such a commit survives a
// crash of the process, and the next flushed commit makes it durable
// too; only a power loss or kernel crash can lose it, and then the
// database is still consistent, just missing the relaxed commits since
// the last flushed one.
//
// It is for bookkeeping whose loss costs at most repeated work: a
// destination's transaction in flight, its completion and its backoff. A
// transaction forgotten that way is sent again, which receivers answer
// from their de-duplication. Events, queues and anything a caller was
// told is stored must use write.
func (db *DB) writeRelaxed(ctx context.Context, fn func(t *txn) error) error {
	if db.opts.Synchronous != "FULL" && db.opts.Synchronous != "EXTRA" {
		return db.write(ctx, fn)
	}
	if observe := db.opts.ObserveTransaction; observe != nil {
		defer func(start time.Time) { observe(true, time.Since(start)) }(time.Now())
	}
	// The pragma is a property of the connection: hold the writer's one
	// connection so that no other write commits while it is relaxed.
	conn, err := db.writer.Conn(ctx)
	if err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
		conn.Close()
		return fmt.Errorf("relax synchronous: %w", err)
	}
	unpooled, err := db.relaxedTxn(ctx, conn, fn)
	// Restore with a context that cannot be cancelled: a connection left
	// relaxed would weaken every later write.
	if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous = "+db.opts.Synchronous); rerr != nil {
		// The connection cannot be trusted any more: drop it so the pool
		// opens a fresh one with the configured pragmas.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		if err == nil {
			err = fmt.Errorf("restore synchronous: %w", rerr)
		}
	}
	conn.Close()
	// Statements are prepared on the pool only once the connection is
	// back in it: the writer has one.
	db.wstmts.warm(ctx, unpooled)
	return err
}

func (db *DB) relaxedTxn(ctx context.Context, conn *sql.Conn, fn func(t *txn) error) ([]string, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	t := &txn{ctx: ctx, tx: tx, pool: db.wstmts, stmts: make(map[string]*sql.Stmt)}
	if err := fn(t); err != nil {
		_ = tx.Rollback()
		return t.unpooled, err
	}
	return t.unpooled, tx.Commit()
}
