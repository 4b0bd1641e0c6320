package store

import (
	"context"
	"fmt"
	"sync"
)

// groupCommit lets concurrent event writes share one durable commit. A
// commit (the fsync behind it) costs about as much as writing a room's
// transaction of events, so when the rooms of a transaction, or
// transactions of several servers, are written at once, the first writer
// commits what the others queued meanwhile in the same database
// transaction, each in a savepoint of its own: one failing does not undo
// the others, and each caller still returns only once its events are
// durable.
type groupCommit struct {
	mu      sync.Mutex
	queue   []*commitUnit
	leading bool
}

// commitUnit is one caller's write within a group.
type commitUnit struct {
	ctx  context.Context
	run  func(t *txn) (*wtx, error)
	w    *wtx
	err  error
	done chan struct{}
}

// writeGrouped runs fn in a write transaction shared with concurrent
// callers and returns once it is committed (or failed). fn returns the
// wtx whose numbers are published after the commit.
func (db *DB) writeGrouped(ctx context.Context, fn func(t *txn) (*wtx, error)) (*wtx, error) {
	u := &commitUnit{ctx: ctx, run: fn, done: make(chan struct{})}
	g := &db.group
	g.mu.Lock()
	g.queue = append(g.queue, u)
	if g.leading {
		g.mu.Unlock()
		<-u.done
		return u.w, u.err
	}
	g.leading = true
	for {
		units := g.queue
		g.queue = nil
		g.mu.Unlock()
		db.commitGroup(ctx, units)
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.leading = false
			g.mu.Unlock()
			break
		}
	}
	return u.w, u.err
}

// commitGroup writes units in one transaction, each in a savepoint, and
// tells each its outcome.
func (db *DB) commitGroup(ctx context.Context, units []*commitUnit) {
	// The leader's cancellation must not fail the others' writes; each
	// unit's own context is checked before it runs.
	err := db.write(context.WithoutCancel(ctx), func(t *txn) error {
		for _, u := range units {
			if err := u.ctx.Err(); err != nil {
				u.err = err
				continue
			}
			if len(units) == 1 {
				u.w, u.err = u.run(t)
				return u.err
			}
			if _, err := t.exec("SAVEPOINT grouped"); err != nil {
				return err
			}
			lastNID := t.lastNID
			u.w, u.err = u.run(t)
			if u.err != nil {
				u.w, t.lastNID = nil, lastNID
				if _, err := t.exec("ROLLBACK TO grouped"); err != nil {
					return fmt.Errorf("roll back a failed write of the group: %w", err)
				}
			}
			if _, err := t.exec("RELEASE grouped"); err != nil {
				return err
			}
		}
		return nil
	})
	for _, u := range units {
		if err != nil && u.err == nil {
			u.err, u.w = err, nil
		}
		if u.err != nil {
			u.w = nil
		}
		close(u.done)
	}
}
