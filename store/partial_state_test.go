package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

func TestPartialState_Records(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t)
	if _, err := db.PartialStateRoom(ctx, "!r:a.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PartialStateRoom of an unmarked room: %v, want ErrNotFound", err)
	}
	for _, p := range []store.PartialRoom{
		{RoomID: "!r:a.test", JoinEventID: "$j1", Servers: []string{"a.test", "c.test"}},
		{RoomID: "!q:a.test", JoinEventID: "$j2", Servers: []string{"a.test"}},
		{RoomID: "!r:a.test", JoinEventID: "$j3", Servers: []string{"c.test"}}, // a second join replaces the first
	} {
		if err := db.MarkPartialState(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	p, err := db.PartialStateRoom(ctx, "!r:a.test")
	if err != nil || p.JoinEventID != "$j3" || !slices.Equal(p.Servers, []string{"c.test"}) {
		t.Fatalf("PartialStateRoom = %+v, %v", p, err)
	}
	all, err := db.PartialStateRooms(ctx)
	if err != nil || len(all) != 2 || all[0].RoomID != "!q:a.test" || all[1].RoomID != "!r:a.test" {
		t.Fatalf("PartialStateRooms = %+v, %v", all, err)
	}
	if err := db.ClearPartialState(ctx, "!q:a.test"); err != nil {
		t.Fatal(err)
	}
	if all, err = db.PartialStateRooms(ctx); err != nil || len(all) != 1 {
		t.Fatalf("after clear: %+v, %v", all, err)
	}
}

// TestPartialState_Complete stores a join whose state before lacks a
// member's event (partial state) and a message after it, then installs
// the full state: the join, the message and the current state all hold
// the member, and the room is no longer partial.
func TestPartialState_Complete(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "partial")
	gen := r.genesis()
	bob := r.join("@bob:c.test")
	full := maps(r.state)
	partial := maps(r.state)
	delete(partial, store.StateKey{Type: "m.room.member", StateKey: "@bob:c.test"})
	// What the joining server holds: the state's events as outliers (bob's
	// join among them only after the resync), and its join with the
	// partial state before it.
	var b store.Batch
	for _, ev := range gen {
		b.Events = append(b.Events, store.NewEvent{Event: ev, Outcome: store.Outlier})
	}
	join := r.join("@dan:b.test")
	msg := r.message("hello")
	b.Events = append(b.Events,
		store.NewEvent{Event: join, Outcome: store.Accepted, StateBefore: &store.StateRef{Changes: partial}},
		store.NewEvent{Event: msg, Outcome: store.Accepted, StateBefore: &store.StateRef{AfterEvent: join.EventID()}})
	b.CurrentState = &store.StateRef{AfterEvent: msg.EventID()}
	b.RoomStatus = store.RoomJoined
	persist(t, db, b)
	if err := db.MarkPartialState(ctx, store.PartialRoom{RoomID: r.id, JoinEventID: join.EventID(), Servers: []string{"a.test"}}); err != nil {
		t.Fatal(err)
	}
	topic := r.next("m.room.topic", rooms.StringPtr(""), "@dan:b.test", map[string]any{"topic": "not allowed"})
	persist(t, db, store.Batch{Events: []store.NewEvent{{Event: topic, Outcome: store.Accepted, StateBefore: &store.StateRef{AfterEvent: msg.EventID()}}},
		CurrentState: &store.StateRef{AfterEvent: topic.EventID()}})
	since, err := db.EventsSince(ctx, r.id, join.EventID())
	if err != nil || !slices.Equal(since, []string{msg.EventID(), topic.EventID()}) {
		t.Fatalf("EventsSince = %v, %v", since, err)
	}
	persist(t, db, store.Batch{Events: []store.NewEvent{{Event: bob, Outcome: store.Outlier}}})
	// The topic, accepted under partial state, turns out to be disallowed:
	// it is rejected, and the state after it is the state before it.
	// The join's full state first, on its own: the room stays partial and
	// its current state is untouched.
	if err := db.RestateEvents(ctx, r.id, []store.Restated{{EventID: join.EventID(), StateBefore: store.StateRef{Changes: full}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PartialStateRoom(ctx, r.id); err != nil {
		t.Fatalf("the room is no longer partial after restating its join: %v", err)
	}
	if cur, err := db.CurrentState(ctx, r.id); err != nil || cur[store.StateKey{Type: "m.room.member", StateKey: "@bob:c.test"}] != "" {
		t.Fatalf("restating the join changed the current state: %v", err)
	}
	err = db.CompletePartialState(ctx, r.id, []store.Restated{
		{EventID: msg.EventID(), StateBefore: store.StateRef{AfterEvent: join.EventID()}},
		{EventID: topic.EventID(), StateBefore: store.StateRef{AfterEvent: msg.EventID()}, RejectedReason: "not allowed by the full state"},
	}, store.StateRef{AfterEvent: topic.EventID()})
	if err != nil {
		t.Fatal(err)
	}
	before, err := db.StateBefore(ctx, join.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if err := equalState(before, full); err != nil {
		t.Fatalf("state before the join: %v", err)
	}
	want := maps(full)
	want[store.StateKey{Type: "m.room.member", StateKey: "@dan:b.test"}] = join.EventID()
	for what, got := range map[string]func() (store.StateMap, error){
		"state before the message": func() (store.StateMap, error) { return db.StateBefore(ctx, msg.EventID()) },
		"state after the message":  func() (store.StateMap, error) { return db.StateAfter(ctx, msg.EventID()) },
		"current state":            func() (store.StateMap, error) { return db.CurrentState(ctx, r.id) },
	} {
		m, err := got()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := equalState(m, want); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	if se, err := db.Event(ctx, topic.EventID()); err != nil || !se.Rejected || se.RejectedReason != "not allowed by the full state" {
		t.Fatalf("the disallowed topic: %+v, %v", se, err)
	}
	servers, err := db.JoinedServers(ctx, r.id)
	if err != nil || !slices.Contains(servers, "c.test") {
		t.Fatalf("joined servers = %v, %v; want c.test among them", servers, err)
	}
	if _, err := db.PartialStateRoom(ctx, r.id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the room is still partial: %v", err)
	}
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
	// An outlier has no state to replace: nothing is written.
	err = db.CompletePartialState(ctx, r.id, []store.Restated{{EventID: bob.EventID(), StateBefore: store.StateRef{Changes: full}}}, store.StateRef{AfterEvent: topic.EventID()})
	if err == nil {
		t.Fatal("restating an outlier succeeded")
	}
}
