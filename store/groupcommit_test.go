package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

// TestGroupCommit_ConcurrentRooms: many rooms written at once (their
// writes share commits) each end with their events, state and
// extremities; a batch that fails among them leaves nothing behind and
// does not fail the others; the extremities a persist reports are the
// stored ones.
func TestGroupCommit_ConcurrentRooms(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	const roomCount = 12
	testRooms := make([]*testRoom, roomCount)
	for i := range testRooms {
		r := newTestRoom(t, fmt.Sprintf("group%d", i))
		persist(t, db, linear(r.genesis()...))
		testRooms[i] = r
	}
	var wg sync.WaitGroup
	errs := make([]error, roomCount)
	results := make([]store.PersistResult, roomCount)
	batches := make([]store.Batch, roomCount)
	for i, r := range testRooms {
		evs := []*rooms.Event{r.message("a"), r.message("b"), r.message("c")}
		batches[i] = linear(evs...)
		if i%4 == 3 {
			// Refused by the store: state before names an event nobody has.
			batches[i].Events[1].StateBefore = &store.StateRef{AfterEvent: "$nowhere"}
		}
	}
	for i := range testRooms {
		wg.Go(func() { results[i], errs[i] = db.PersistEvents(ctx, batches[i]) })
	}
	wg.Wait()
	for i, r := range testRooms {
		exts, err := db.ForwardExtremities(ctx, r.id)
		if err != nil {
			t.Fatal(err)
		}
		last := batches[i].Events[2].Event.EventID()
		if i%4 == 3 {
			if errs[i] == nil {
				t.Fatalf("room %d: a batch with an unknown state was stored", i)
			}
			if _, err := db.Event(ctx, last); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("room %d: failed batch left %s behind: %v", i, last, err)
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("room %d: %v", i, errs[i])
		}
		if !slices.Equal(exts, []string{last}) || !slices.Equal(results[i].Extremities, exts) {
			t.Fatalf("room %d: stored extremities %v, reported %v, want [%s]", i, exts, results[i].Extremities, last)
		}
		if _, err := db.Event(ctx, last); err != nil {
			t.Fatalf("room %d: %v", i, err)
		}
	}
}

// TestWriteGroup_OneMergedCommit: the rooms of a WriteGroup, written at
// once, share one database transaction (the leader waits for all of
// them) and each ends with its events, extremities and host log entries
// (numbered by the store, after those before, each once); the room's
// next write, outside the group, starts from the extremities the group
// left and appends after the group's entries.
func TestWriteGroup_OneMergedCommit(t *testing.T) {
	t.Parallel()
	var writes atomic.Int64
	db := storetest.Open(t, store.Options{
		MaxGroupWait: time.Minute, // never the reason a group is committed
		ObserveTransaction: func(write bool, _ time.Duration) {
			if write {
				writes.Add(1)
			}
		},
	})
	const roomCount = 12
	testRooms := make([]*testRoom, roomCount)
	for i := range testRooms {
		testRooms[i] = newTestRoom(t, fmt.Sprintf("wg%d", i))
		persist(t, db, linear(testRooms[i].genesis()...))
	}
	ctx := context.Background()
	head, err := db.AppendHostLog(ctx, store.HostLogEntry{Kind: store.HostEDU, Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	batches := make([]store.Batch, roomCount)
	for i, r := range testRooms {
		batches[i] = linear(r.message("a"), r.message("b"))
		for _, ne := range batches[i].Events {
			batches[i].HostLog = append(batches[i].HostLog, store.HostLogEntry{Kind: store.HostEvent, RoomID: r.id, EventID: ne.Event.EventID()})
		}
	}
	before := writes.Load()
	results, errs := writeInGroup(db, batches)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("room %d: %v", i, err)
		}
	}
	if n := writes.Load() - before; n != 1 {
		t.Fatalf("%d rooms of a write group took %d write transactions, want 1", roomCount, n)
	}
	records, err := db.ReadHostLog(ctx, head[0], 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 2*roomCount {
		t.Fatalf("%d host log entries after the group, want %d", len(records), 2*roomCount)
	}
	logged := map[int64]string{}
	for i, rec := range records {
		if want := head[0] + 1 + int64(i); rec.Pos != want {
			t.Fatalf("host log entry %d at %d, want %d", i, rec.Pos, want)
		}
		logged[rec.Pos] = rec.EventID
	}
	for i, res := range results {
		for j, pos := range res.HostLog {
			if id := batches[i].Events[j].Event.EventID(); logged[pos] != id {
				t.Fatalf("room %d: entry %d reported at %d, which holds %q, not %s", i, j, pos, logged[pos], id)
			}
		}
	}
	for i, r := range testRooms {
		expectExtremities(t, db, r.id, batches[i].Events[1].Event.EventID())
		next := r.message("c")
		b := linear(next)
		b.HostLog = []store.HostLogEntry{{Kind: store.HostEvent, RoomID: r.id, EventID: next.EventID()}}
		if res := persist(t, db, b); res.HostLog[0] != head[0]+2*roomCount+1+int64(i) {
			t.Fatalf("room %d: next entry at %d, want %d", i, res.HostLog[0], head[0]+2*roomCount+1+int64(i))
		}
		expectExtremities(t, db, r.id, next.EventID())
	}
}

// TestWriteGroup_FailingWriteFallsBack: when one write of a merged group
// fails, the group is written again write by write: the failing one
// leaves nothing, the others are all stored.
func TestWriteGroup_FailingWriteFallsBack(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.Options{MaxGroupWait: time.Minute})
	const roomCount = 6
	testRooms := make([]*testRoom, roomCount)
	batches := make([]store.Batch, roomCount)
	for i := range testRooms {
		r := newTestRoom(t, fmt.Sprintf("wgfail%d", i))
		persist(t, db, linear(r.genesis()...))
		testRooms[i] = r
		batches[i] = linear(r.message("a"), r.message("b"))
	}
	batches[2].Events[1].StateBefore = &store.StateRef{AfterEvent: "$nowhere"}
	_, errs := writeInGroup(db, batches)
	ctx := context.Background()
	for i, r := range testRooms {
		if i == 2 {
			if errs[i] == nil {
				t.Fatal("a batch with an unknown state was stored")
			}
			for _, ne := range batches[i].Events {
				if _, err := db.Event(ctx, ne.Event.EventID()); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("the failed batch left %s behind: %v", ne.Event.EventID(), err)
				}
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("room %d: %v", i, errs[i])
		}
		expectExtremities(t, db, r.id, batches[i].Events[1].Event.EventID())
	}
}

// TestWriteGroup_SameRoomTwice: two writes of one room in a merged group
// (the second following the first) leave the right extremities, whatever
// order they are written in, and so does the room's next write.
func TestWriteGroup_SameRoomTwice(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.Options{MaxGroupWait: time.Minute})
	r := newTestRoom(t, "wgtwice")
	persist(t, db, linear(r.genesis()...))
	other := newTestRoom(t, "wgother")
	persist(t, db, linear(other.genesis()...))
	a, b := r.message("a"), r.message("b")
	batches := []store.Batch{linear(a), linear(b), linear(other.message("x"))}
	// Whichever is written first: the state before b is the state before
	// a (a message changes none), so b does not need a stored.
	batches[1].Events[0].StateBefore = &store.StateRef{AfterEvent: a.PrevEvents()[0]}
	_, errs := writeInGroup(db, batches)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	expectExtremities(t, db, r.id, b.EventID())
	c := r.message("c")
	if res := persist(t, db, linear(c)); !slices.Equal(res.Extremities, []string{c.EventID()}) {
		t.Fatalf("reported extremities %v, want [%s]", res.Extremities, c.EventID())
	}
	expectExtremities(t, db, r.id, c.EventID())
}

// writeInGroup persists each batch in a goroutine of its own, all as
// participants of one WriteGroup, and returns their results and errors.
func writeInGroup(db *store.DB, batches []store.Batch) ([]store.PersistResult, []error) {
	g := db.NewWriteGroup()
	ctx := store.WithWriteGroup(context.Background(), g)
	for range batches {
		g.Join() // all are running before the first write is queued
	}
	errs := make([]error, len(batches))
	results := make([]store.PersistResult, len(batches))
	var wg sync.WaitGroup
	for i := range batches {
		wg.Go(func() {
			defer g.Leave()
			results[i], errs[i] = db.PersistEvents(ctx, batches[i])
		})
	}
	wg.Wait()
	return results, errs
}

func expectExtremities(t *testing.T, db *store.DB, roomID string, want ...string) {
	t.Helper()
	got, err := db.ForwardExtremities(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("room %s: extremities %v, want %v", roomID, got, want)
	}
}
