package homeserver

import (
	"context"
	"sync"
)

// A transaction's PDUs are usually in as many rooms as it has PDUs.
// Asking the store which of them it holds room by room costs a read of
// its own for each (a fresh snapshot on the read pool, whose page cache
// the last commit emptied), which was a tenth of a PDU's cost in such a
// transaction. heldLookup asks once for all the rooms of a transaction.
//
// The answer is taken before the rooms' locks, so a room's writes
// between the question and its lock would make "not held" wrong. Every
// write of a room's events counts in the engine's per-room write count
// once it has ended (persistResult); a room uses the shared answer only
// when its count has not moved since before the question was asked, and
// asks again itself otherwise.

// heldLookup collects the event IDs of a transaction's rooms and asks
// the store once, when every room that takes part has handed in its IDs.
type heldLookup struct {
	store unheldLookup

	mu       sync.Mutex
	expected int // rooms yet to hand in their IDs or withdraw
	ids      []string
	done     chan struct{}
	// After done: the IDs the store did not hold, each with whether it
	// had no row of it at all (UnheldEvents), or the lookup's error.
	unheld map[string]bool
	err    error
}

// unheldLookup is the store's question heldLookup asks.
type unheldLookup interface {
	UnheldEvents(ctx context.Context, ids []string) (map[string]bool, error)
}

// newHeldLookup prepares a lookup for rooms rooms; each must call join
// or withdraw exactly once.
func newHeldLookup(st unheldLookup, rooms int) *heldLookup {
	return &heldLookup{store: st, expected: rooms, done: make(chan struct{})}
}

// join hands in a room's IDs; the last room to hand in (or withdraw)
// asks the store.
func (l *heldLookup) join(ctx context.Context, ids []string) {
	l.mu.Lock()
	l.ids = append(l.ids, ids...)
	l.expected--
	last := l.expected == 0
	l.mu.Unlock()
	if last {
		l.ask(ctx)
	}
}

// withdraw leaves the lookup without IDs (a room whose version was not
// known yet, or that failed before parsing).
func (l *heldLookup) withdraw(ctx context.Context) { l.join(ctx, nil) }

func (l *heldLookup) ask(ctx context.Context) {
	defer close(l.done)
	if len(l.ids) == 0 {
		return
	}
	l.unheld, l.err = l.store.UnheldEvents(ctx, l.ids)
}

// notHeld waits for the answer and returns the store's answer for ids,
// as UnheldEvents gives it; ok is false when the lookup failed.
func (l *heldLookup) notHeld(ctx context.Context, ids []string) (map[string]bool, bool) {
	select {
	case <-l.done:
	case <-ctx.Done():
		return nil, false
	}
	if l.err != nil {
		return nil, false
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		if absent, ok := l.unheld[id]; ok {
			out[id] = absent
		}
	}
	return out, true
}

// roomWrites counts, per room, the writes of its events that have ended.
type roomWrites struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (w *roomWrites) count(roomID string) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n[roomID]
}

func (w *roomWrites) ended(roomIDs ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == nil {
		w.n = make(map[string]uint64)
	}
	for _, id := range roomIDs {
		w.n[id]++
	}
}
