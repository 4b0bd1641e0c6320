package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// groupCommit lets concurrent event writes share one durable commit. A
// commit (the fsync behind it) costs about as much as writing a room's
// transaction of events, so when the rooms of a transaction, or
// transactions of several servers, are written at once, one caller (the
// leader) writes what the others queued meanwhile in the same database
// transaction, merged (commitMerged), or each in a savepoint of its own
// when a merged write fails (commitSeparately): one failing does not undo
// the others. Each caller returns only once its events are durable. The
// leader writes one group and hands over to a caller still waiting.
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
	ctx  context.Context
	run  func(t *txn) (*wtx, error)
	w    *wtx
	err  error
	done chan struct{}
	// lead is closed when this unit's caller is to write the next group
	// (its own write among them).
	lead  chan struct{}
	group *WriteGroup
}

// WriteGroup names work that runs at once and whose writes should share
// one commit: the rooms of one inbound transaction, judged in parallel.
// Left to timing, their writes reach the store a few at a time and the
// transaction pays for several commits. With a WriteGroup, the
// transaction that takes in a participant's write stays open (a few
// milliseconds at most, Options.MaxGroupWait) until every running
// participant has had its write taken in or left, and writes each as it
// comes, so the first rooms are written while the last are still judged.
//
// A participant calls Join before its work and Leave after it; its
// context carries the group (WithWriteGroup). A participant that goes off
// to do something slow (fetching from the network) should Leave and Join
// again so that the others do not wait for it.
type WriteGroup struct {
	db *DB
	// running counts participants between Join and Leave; queued those of
	// them whose write waits in the queue, taken those whose write is in
	// the transaction being written. All under db.group.mu.
	running, queued, taken int
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

// incomplete reports whether a WriteGroup of one of units, or of a
// queued write, still has a participant running that has neither queued
// a write nor had one taken into the transaction being written; gc.mu is
// held.
func (gc *groupCommit) incomplete(units []*commitUnit) bool {
	waiting := func(u *commitUnit) bool {
		g := u.group
		return g != nil && g.running > g.queued+g.taken
	}
	return slices.ContainsFunc(units, waiting) || slices.ContainsFunc(gc.queue, waiting)
}

// maxMergedUnits bounds the writes one merged transaction takes in.
const maxMergedUnits = 512

// take moves the queued writes into the transaction being written; gc.mu
// is held.
func (gc *groupCommit) take() []*commitUnit {
	units := gc.queue
	gc.queue = nil
	for _, u := range units {
		if u.group != nil {
			u.group.queued--
			u.group.taken++
		}
	}
	return units
}

// more waits, until deadline, for writes to add to a merged transaction
// that holds units: it returns what is queued as soon as there is some,
// and nil once no WriteGroup of the transaction has a participant still
// running (nothing more is coming that the transaction should wait for),
// the deadline has passed or the transaction holds maxMergedUnits.
func (gc *groupCommit) more(units []*commitUnit, deadline time.Time) []*commitUnit {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	if len(units) >= maxMergedUnits {
		return nil
	}
	if len(gc.queue) > 0 {
		return gc.take()
	}
	wait := time.Until(deadline)
	if wait <= 0 || !gc.incomplete(units) {
		return nil
	}
	if gc.arrived == nil {
		gc.arrived = sync.NewCond(&gc.mu)
	}
	expired := false
	timer := time.AfterFunc(wait, func() {
		gc.mu.Lock()
		expired = true
		gc.arrived.Broadcast()
		gc.mu.Unlock()
	})
	defer timer.Stop()
	for !expired && len(gc.queue) == 0 && gc.incomplete(units) {
		gc.arrived.Wait()
	}
	return gc.take()
}

// finish tells units their outcome.
func (gc *groupCommit) finish(units []*commitUnit) {
	gc.mu.Lock()
	for _, u := range units {
		if u.group != nil {
			u.group.taken--
		}
	}
	gc.mu.Unlock()
	for _, u := range units {
		if u.err != nil {
			u.w = nil
		}
		close(u.done)
	}
}

// writeGrouped runs fn in a write transaction shared with concurrent
// callers and returns once it is committed (or failed). fn returns the
// wtx whose numbers are published after the commit.
func (db *DB) writeGrouped(ctx context.Context, fn func(t *txn) (*wtx, error)) (*wtx, error) {
	u := &commitUnit{ctx: ctx, run: fn, done: make(chan struct{}), lead: make(chan struct{}), group: WriteGroupOf(ctx)}
	g := &db.group
	g.mu.Lock()
	g.queue = append(g.queue, u)
	if u.group != nil {
		u.group.queued++
		g.signal()
	}
	if g.leading {
		g.mu.Unlock()
		select {
		case <-u.done:
			return u.w, u.err
		case <-u.lead:
			// The last leader handed over; g.leading stays true for us.
		}
		g.mu.Lock()
	}
	g.leading = true
	// A caller writes one group, its own write among it, then hands over
	// to a caller still waiting: one caller leading on while others keep
	// queueing would wait ever longer for its own answer, and would count
	// as a participant of its WriteGroup that has not written yet, which
	// the next group would wait for in vain.
	units := g.take()
	g.mu.Unlock()
	db.commitGroup(ctx, units)
	g.mu.Lock()
	if len(g.queue) > 0 {
		close(g.queue[0].lead)
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	<-u.done
	return u.w, u.err
}

// commitGroup writes units, and the writes that join them meanwhile, in
// one transaction and tells each its outcome: merged when that works,
// else each in a savepoint.
func (db *DB) commitGroup(ctx context.Context, units []*commitUnit) {
	if len(units) == 1 && units[0].group == nil {
		db.commitSeparately(ctx, units)
		return
	}
	units, ok := db.commitMerged(ctx, units)
	if !ok {
		db.commitSeparately(ctx, units)
	}
}

// errMergeFailed ends a merged attempt at a group.
var errMergeFailed = errors.New("a write of the merged group failed")

// commitMerged writes units one after the other in one transaction, with
// shared row buffers written once at the end and no savepoints: a
// group's rooms cost a statement per table instead of one per table and
// room. While a WriteGroup of the transaction has participants still
// being judged, it waits for their writes (up to Options.MaxGroupWait)
// and runs each as it comes, so that writing the first rooms overlaps
// judging the last ones; writes queued meanwhile by others join too.
//
// It returns every unit the transaction took in, and false when any of it
// failed: then nothing is kept, and the units are to be written again one
// by one (commitSeparately), where a failing write does not undo the
// others. Units only read what they write themselves, each in its own
// room, so deferring the shared rows to the end changes nothing they
// see; where a room is written twice the store writes the shared rows
// before reading (loadExtremities); a conflict between units shows as an
// error and takes the separate path.
func (db *DB) commitMerged(ctx context.Context, units []*commitUnit) ([]*commitUnit, bool) {
	deadline := time.Now().Add(db.opts.MaxGroupWait)
	err := db.write(context.WithoutCancel(ctx), func(t *txn) error {
		t.shared = db.newWriteBuffers()
		for next := units; len(next) > 0; {
			for _, u := range next {
				if err := u.ctx.Err(); err != nil {
					u.err = err
					continue
				}
				if u.w, u.err = u.run(t); u.err != nil {
					return errMergeFailed
				}
			}
			next = db.group.more(units, deadline)
			units = append(units, next...)
		}
		w := &wtx{t: t, db: db, writeBuffers: t.shared}
		return w.flushAll()
	})
	if err != nil {
		for _, u := range units {
			u.w, u.err = nil, nil
		}
		return units, false
	}
	db.group.finish(units)
	return units, true
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
	}
	db.group.finish(units)
}
