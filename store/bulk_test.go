package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

// TestPersistEvents_BulkJoin is the send_join shape: a remote room's state
// and auth chain arrive as outliers in any order (here reversed, so edges
// first point at events later in the batch), with our join whose state
// before is the whole state, in one batch. A later event builds on it with
// BeforeEvent plus changes.
func TestPersistEvents_BulkJoin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "bulk")
	evs := r.genesis()
	for i := range 600 {
		evs = append(evs, r.join(fmt.Sprintf("@m%03d:s%d.test", i, i%7)))
	}
	state := maps(r.state)
	join := r.join("@us:a.test")
	var b store.Batch
	for i := len(evs) - 1; i >= 0; i-- {
		b.Events = append(b.Events, store.NewEvent{Event: evs[i], Outcome: store.Outlier})
	}
	b.Events = append(b.Events, store.NewEvent{Event: evs[5], Outcome: store.Outlier}) // a duplicate
	b.Events = append(b.Events, store.NewEvent{Event: join, Outcome: store.Accepted, StateBefore: &store.StateRef{Changes: state}, Destinations: []string{"s1.test"}})
	b.CurrentState = &store.StateRef{AfterEvent: join.EventID()}
	b.RoomStatus = store.RoomJoined
	b.HostLog = []store.HostLogEntry{{Kind: store.HostEvent, RoomID: r.id, EventID: join.EventID()}}
	res := persist(t, db, b)
	if len(res.Stored) != len(evs)+1 {
		t.Fatalf("stored %d events, want %d", len(res.Stored), len(evs)+1)
	}
	got, err := db.StateBefore(ctx, join.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if err := equalState(got, state); err != nil {
		t.Fatal(err)
	}
	cur, err := db.CurrentState(ctx, r.id)
	if err != nil {
		t.Fatal(err)
	}
	if err := equalState(cur, r.state); err != nil {
		t.Fatal(err)
	}
	servers, err := db.JoinedServers(ctx, r.id)
	if err != nil || len(servers) != 8 || !slices.Contains(servers, "a.test") {
		t.Fatalf("joined servers %v, %v", servers, err)
	}
	ext, _ := db.ForwardExtremities(ctx, r.id)
	if !slices.Equal(ext, []string{join.EventID()}) {
		t.Fatalf("extremities %v", ext)
	}
	se, err := db.Event(ctx, evs[300].EventID())
	if err != nil || !se.Outlier {
		t.Fatalf("state event %+v, %v", se, err)
	}
	chain, err := db.AuthChain(ctx, []string{evs[300].EventID()})
	if err != nil || len(chain) != 4 {
		t.Fatalf("auth chain of a member: %v, %v", chain, err)
	}
	// Backfill walks the prev edges written while the targets were
	// still placeholders.
	back, err := db.Backfill(ctx, r.id, []string{join.EventID()}, 10)
	if err != nil || len(back) != 10 || back[1].Event.EventID() != evs[len(evs)-1].EventID() {
		t.Fatalf("backfill %d, %v", len(back), err)
	}

	// The next event: state before the join plus the join and a change.
	topic := r.next("m.room.topic", rooms.StringPtr(""), "@us:a.test", map[string]any{"topic": "t"})
	persist(t, db, store.Batch{
		Events: []store.NewEvent{{Event: topic, Outcome: store.Accepted, StateBefore: &store.StateRef{
			BeforeEvent: join.EventID(),
			Changes:     store.StateMap{{Type: "m.room.member", StateKey: "@us:a.test"}: join.EventID()},
		}}},
		CurrentState: &store.StateRef{AfterEvent: topic.EventID()},
	})
	cur, _ = db.CurrentState(ctx, r.id)
	if err := equalState(cur, r.state); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PersistEvents(ctx, store.Batch{Events: []store.NewEvent{{Event: r.message("x"), Outcome: store.Accepted,
		StateBefore: &store.StateRef{BeforeEvent: evs[3].EventID()}}}}); err == nil {
		t.Fatal("state before an outlier was accepted as a base")
	}
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := db.Stats(ctx)
	if err != nil || st.Events != int64(len(evs)+2) || st.FileBytes == 0 {
		t.Fatalf("stats %+v, %v", st, err)
	}
}

// TestAuthDifference_MatchesFullChains compares AuthDifference with the
// definition computed from AuthChain of each whole set, for states of one
// room taken at different points (they share most events).
func TestAuthDifference_MatchesFullChains(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "ad")
	evs := r.genesis()
	var states []store.StateMap
	for i := range 60 {
		user := fmt.Sprintf("@u%d:b.test", i%25)
		switch {
		case i%10 == 9:
			evs = append(evs, r.next("m.room.power_levels", rooms.StringPtr(""), r.creator, map[string]any{"users": map[string]any{r.creator: 100, user: i}}))
		case i%4 == 3:
			evs = append(evs, r.next("m.room.member", rooms.StringPtr(user), user, map[string]any{"membership": "leave"}))
		default:
			evs = append(evs, r.join(user))
		}
		if i%15 == 14 {
			states = append(states, maps(r.state))
		}
	}
	persist(t, db, linear(evs...))
	ids := func(m store.StateMap) []string {
		var out []string
		for _, id := range m {
			out = append(out, id)
		}
		return out
	}
	nonEmpty := 0
	for _, pick := range [][]int{{0, 1}, {1, 3}, {0, 2, 3}, {2, 2}} {
		var sets [][]string
		count := map[string]int{}
		for _, p := range pick {
			sets = append(sets, ids(states[p]))
			chain, err := db.AuthChain(ctx, ids(states[p]))
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range chain {
				count[id]++
			}
		}
		var want []string
		for id, n := range count {
			if n < len(pick) {
				want = append(want, id)
			}
		}
		slices.Sort(want)
		if len(want) > 0 {
			nonEmpty++
		}
		got, err := db.AuthDifference(ctx, sets)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("sets %v: auth difference %v, want %v", pick, got, want)
		}
	}
	if nonEmpty < 3 {
		t.Fatalf("only %d of the cases have a non-empty difference", nonEmpty)
	}
}
