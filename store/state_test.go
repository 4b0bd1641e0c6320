package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

// TestState_RandomDAG grows a room as a random DAG of state and message
// events, with state changes on top of the state after a prev event
// (removals included), and checks the state before and after every event
// and the current state against a model, under thresholds that force
// chain merging and full snapshots often, and under the defaults.
func TestState_RandomDAG(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts store.Options
	}{
		{"small thresholds", store.Options{MinDeltaRows: 3, FullSnapshotRatio: 0.5, StateCacheEntries: 40}},
		{"defaults", store.Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := storetest.Open(t, tc.opts)
			rng := rand.New(rand.NewPCG(1, 2))
			r := newTestRoom(t, "dag")
			create := r.create()
			persist(t, db, linear(create))
			after := map[string]store.StateMap{create.EventID(): {{Type: "m.room.create"}: create.EventID()}}
			before := map[string]store.StateMap{create.EventID(): {}}
			held := []string{create.EventID()}
			var stateEvents []string
			for i := range 300 {
				p := held[len(held)-1]
				if rng.IntN(4) == 0 {
					p = held[rng.IntN(len(held))]
				}
				ref := &store.StateRef{AfterEvent: p}
				want := maps(after[p])
				if len(stateEvents) > 0 && rng.IntN(5) == 0 {
					ref.Changes = store.StateMap{}
					for range 1 + rng.IntN(3) {
						k := store.StateKey{Type: "m.test", StateKey: fmt.Sprint(rng.IntN(40))}
						if rng.IntN(3) == 0 {
							ref.Changes[k] = ""
							delete(want, k)
						} else {
							id := stateEvents[rng.IntN(len(stateEvents))]
							ref.Changes[k] = id
							want[k] = id
						}
					}
				}
				var ev *rooms.Event
				if rng.IntN(3) == 0 {
					ev = r.build("m.room.message", nil, r.creator, map[string]any{"i": i}, []string{p})
				} else {
					ev = r.build("m.test", rooms.StringPtr(fmt.Sprint(rng.IntN(40))), r.creator, map[string]any{"i": i}, []string{p})
				}
				b := store.Batch{Events: []store.NewEvent{{Event: ev, Outcome: store.Accepted, StateBefore: ref}}}
				if rng.IntN(3) == 0 {
					b.CurrentState = &store.StateRef{AfterEvent: ev.EventID()}
				}
				persist(t, db, b)
				before[ev.EventID()] = want
				wantAfter := maps(want)
				if sk, ok := ev.StateKey(); ok {
					wantAfter[store.StateKey{Type: ev.Type(), StateKey: sk}] = ev.EventID()
					stateEvents = append(stateEvents, ev.EventID())
				}
				after[ev.EventID()] = wantAfter
				held = append(held, ev.EventID())
				if b.CurrentState != nil {
					cur, err := db.CurrentState(ctx, r.id)
					if err != nil {
						t.Fatal(err)
					}
					if err := equalState(cur, wantAfter); err != nil {
						t.Fatalf("current state after event %d: %v", i, err)
					}
				}
			}
			for i, id := range held {
				got, err := db.StateBefore(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if err := equalState(got, before[id]); err != nil {
					t.Fatalf("state before event %d: %v", i, err)
				}
				got, err = db.StateAfter(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if err := equalState(got, after[id]); err != nil {
					t.Fatalf("state after event %d: %v", i, err)
				}
				for k, v := range before[id] {
					if rng.IntN(8) != 0 {
						continue
					}
					got, err := db.StateEventBefore(ctx, id, k)
					if err != nil || got != v {
						t.Fatalf("state event before %d at %v = %q, %v; want %q", i, k, got, err, v)
					}
				}
			}
			if err := db.IntegrityCheck(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestState_ChainsStayShort checks the structure promise: after n single
// changes the chain from a snapshot to its full root has at most
// log2(n)+1 nodes, seen through the number of snapshot rows read.
func TestState_ChainsStayShort(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t, store.Options{MinDeltaRows: 1 << 20})
	r := newTestRoom(t, "chain")
	evs := []*rooms.Event{r.create()}
	for i := range 255 {
		evs = append(evs, r.next("m.test", rooms.StringPtr(fmt.Sprint(i)), r.creator, nil))
	}
	persist(t, db, linear(evs...))
	st, err := db.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 256 state events: at most 8+1 nodes in any chain.
	if st.MaxChainLength > 9 {
		t.Fatalf("longest chain %d nodes, want ≤ 9", st.MaxChainLength)
	}
	if st.FullSnapshots != 1 {
		t.Fatalf("%d full snapshots, want 1", st.FullSnapshots)
	}
}
