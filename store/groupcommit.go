package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
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
	// arrived is signalled (under mu) when a unit is queued or a
	// WriteGroup participant leaves: what a leader waiting for the rest
	// of a group waits for.
	arrived *sync.Cond
}

// commitUnit is one caller's write within a group.
type commitUnit struct {
	ctx   context.Context
	run   func(t *txn) (*wtx, error)
	w     *wtx
	err   error
	done  chan struct{}
	group *WriteGroup
}

// WriteGroup names work that runs at once and whose writes should share
// one commit: the rooms of one inbound transaction, judged in parallel.
// Left to timing, their writes reach the store a few at a time and the
// transaction pays for several commits; with a WriteGroup a leader about
// to commit a participant's write first waits (a few milliseconds at
// most) until every running participant has queued a write or left.
//
// A participant calls Join before its work and Leave after it; its
// context carries the group (WithWriteGroup). A participant that goes
// off to do something slow (fetching from the network) should Leave and
// Join again so that the others do not wait for it.
type WriteGroup struct {
	db *DB
	// running counts participants between Join and Leave; queued those of
	// them whose write waits in the queue. Both under db.group.mu.
	running, queued int
}

// NewWriteGroup returns a group with no participants.
func (db *DB) NewWriteGroup() *WriteGroup { return &WriteGroup{db: db} }

// Join adds a running participant.
func (g *WriteGroup) Join() {
	gc := &g.db.group
	gc.mu.Lock()
	g.running++
	gc.mu.Unlock()
}

// Leave ends a participant's part; a leader waiting for it goes on.
func (g *WriteGroup) Leave() {
	gc := &g.db.group
	gc.mu.Lock()
	g.running--
	gc.signal()
	gc.mu.Unlock()
}

type writeGroupKey struct{}

// WithWriteGroup returns ctx carrying g: the store's grouped writes made
// with it count as g's.
func WithWriteGroup(ctx context.Context, g *WriteGroup) context.Context {
	return context.WithValue(ctx, writeGroupKey{}, g)
}

// WriteGroupOf returns the group ctx carries, or nil.
func WriteGroupOf(ctx context.Context) *WriteGroup {
	g, _ := ctx.Value(writeGroupKey{}).(*WriteGroup)
	return g
}

// signal wakes a waiting leader; gc.mu is held.
func (gc *groupCommit) signal() {
	if gc.arrived != nil {
		gc.arrived.Broadcast()
	}
}

// incomplete reports whether a group with a write in the queue still has
// a running participant that has not queued one; gc.mu is held.
func (gc *groupCommit) incomplete() bool {
	for _, u := range gc.queue {
		if g := u.group; g != nil && g.running > g.queued {
			return true
		}
	}
	return false
}

// awaitGroups waits, up to maxWait, until no group with a write in the
// queue has a participant still running; gc.mu is held. maxWait
// (Options.MaxGroupWait) is enough for the rooms of a transaction to be
// judged, short enough that a participant held up elsewhere costs little.
func (gc *groupCommit) awaitGroups(maxWait time.Duration) {
	if !gc.incomplete() {
		return
	}
	if gc.arrived == nil {
		gc.arrived = sync.NewCond(&gc.mu)
	}
	expired := false
	timer := time.AfterFunc(maxWait, func() {
		gc.mu.Lock()
		expired = true
		gc.arrived.Broadcast()
		gc.mu.Unlock()
	})
	defer timer.Stop()
	for !expired && gc.incomplete() {
		gc.arrived.Wait()
	}
}

// writeGrouped runs fn in a write transaction shared with concurrent
// callers and returns once it is committed (or failed). fn returns the
// wtx whose numbers are published after the commit.
func (db *DB) writeGrouped(ctx context.Context, fn func(t *txn) (*wtx, error)) (*wtx, error) {
	u := &commitUnit{ctx: ctx, run: fn, done: make(chan struct{}), group: WriteGroupOf(ctx)}
	g := &db.group
	g.mu.Lock()
	g.queue = append(g.queue, u)
	if u.group != nil {
		u.group.queued++
		g.signal()
	}
	if g.leading {
		g.mu.Unlock()
		<-u.done
		return u.w, u.err
	}
	g.leading = true
	for {
		g.awaitGroups(db.opts.MaxGroupWait)
		units := g.queue
		g.queue = nil
		for _, q := range units {
			if q.group != nil {
				q.group.queued--
			}
		}
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

// commitGroup writes units in one transaction and tells each its
// outcome: merged when that works, else each in a savepoint.
func (db *DB) commitGroup(ctx context.Context, units []*commitUnit) {
	if len(units) > 1 && db.commitMerged(ctx, units) {
		return
	}
	db.commitSeparately(ctx, units)
}

// errMergeFailed ends a merged attempt at a group.
var errMergeFailed = errors.New("a write of the merged group failed")

// commitMerged writes units one after the other in one transaction, with
// shared row buffers written once at the end and no savepoints: a
// group's rooms cost a statement per table instead of one per table and
// room. When any of it fails, nothing is kept and it returns false for
// the group to be written again unit by unit (commitSeparately), where a
// failing write does not undo the others. Units only read what they
// write themselves, each in its own room, so deferring the shared rows
// to the end changes nothing they see; a conflict between units shows as
// an error and takes the separate path.
func (db *DB) commitMerged(ctx context.Context, units []*commitUnit) bool {
	err := db.write(context.WithoutCancel(ctx), func(t *txn) error {
		t.shared = db.newWriteBuffers()
		for _, u := range units {
			if err := u.ctx.Err(); err != nil {
				u.err = err
				continue
			}
			if u.w, u.err = u.run(t); u.err != nil {
				return errMergeFailed
			}
		}
		w := &wtx{t: t, db: db, writeBuffers: t.shared}
		return w.flushAll()
	})
	if err != nil {
		for _, u := range units {
			u.w, u.err = nil, nil
		}
		return false
	}
	for _, u := range units {
		if u.err != nil {
			u.w = nil
		}
		close(u.done)
	}
	return true
}

// commitSeparately writes units in one transaction, each in a savepoint.
func (db *DB) commitSeparately(ctx context.Context, units []*commitUnit) {
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
