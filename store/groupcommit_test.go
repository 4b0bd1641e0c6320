package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

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
