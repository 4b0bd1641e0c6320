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

// TestDB_PersistEventsForTxn: the (sender, txn ID) record and its event
// are written together; a second event under the same record is refused
// and nothing of it is written.
func TestDB_PersistEventsForTxn(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "txn")
	persist(t, db, linear(r.genesis()...))
	lt := store.LocalTxn{Sender: r.creator, TxnID: "m1"}
	if _, err := db.LocalTxnEvent(ctx, lt.Sender, lt.TxnID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown txn: %v", err)
	}
	first := r.message("one")
	if _, err := db.PersistEventsForTxn(ctx, linear(first), lt); err != nil {
		t.Fatal(err)
	}
	if id, err := db.LocalTxnEvent(ctx, lt.Sender, lt.TxnID); err != nil || id != first.EventID() {
		t.Fatalf("txn record %q, %v; want %s", id, err, first.EventID())
	}
	second := r.message("two")
	if _, err := db.PersistEventsForTxn(ctx, linear(second), lt); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second event under one txn: %v, want ErrConflict", err)
	}
	if _, err := db.Event(ctx, second.EventID()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused event was written: %v", err)
	}
	if ext, err := db.ForwardExtremities(ctx, r.id); err != nil || !slices.Equal(ext, []string{first.EventID()}) {
		t.Fatalf("extremities %v, %v", ext, err)
	}
	// A failing event write leaves no txn record either.
	bad := linear(r.message("three"))
	bad.Events[0].StateBefore = &store.StateRef{AfterEvent: "$not-held"}
	if _, err := db.PersistEventsForTxn(ctx, bad, store.LocalTxn{Sender: r.creator, TxnID: "m3"}); err == nil {
		t.Fatal("persisting with an unknown state reference succeeded")
	}
	if _, err := db.LocalTxnEvent(ctx, r.creator, "m3"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a txn record without its event: %v", err)
	}
}

// TestDB_Timeline: topological order both ways from any place, outliers
// left out.
func TestDB_Timeline(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "timeline")
	evs := r.genesis()
	for range 6 {
		evs = append(evs, r.message("m"))
	}
	persist(t, db, linear(evs...))
	outlier := r.build("m.room.message", nil, r.creator, map[string]any{"body": "aside"}, nil)
	persist(t, db, store.Batch{Events: []store.NewEvent{{Event: outlier, Outcome: store.Outlier}}})

	ids := func(page []store.TimelineEvent) []string {
		out := make([]string, len(page))
		for i, te := range page {
			out[i] = te.Event.Event.EventID()
		}
		return out
	}
	all := make([]string, len(evs))
	for i, ev := range evs {
		all[i] = ev.EventID()
	}
	fwd, err := db.Timeline(ctx, r.id, nil, false, 100)
	if err != nil || !slices.Equal(ids(fwd), all) {
		t.Fatalf("forwards %v, %v", ids(fwd), err)
	}
	back, err := db.Timeline(ctx, r.id, nil, true, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(all)
	slices.Reverse(want)
	if !slices.Equal(ids(back), want[:3]) {
		t.Fatalf("newest 3 %v, want %v", ids(back), want[:3])
	}
	more, err := db.Timeline(ctx, r.id, &back[2].Pos, true, 100)
	if err != nil || !slices.Equal(ids(more), want[3:]) {
		t.Fatalf("older %v, %v", ids(more), err)
	}
	at, err := db.TimelineAt(ctx, r.id, back[2].Pos)
	if err != nil || at.Event.Event.EventID() != want[2] {
		t.Fatalf("timeline at: %+v, %v", at, err)
	}
	if _, err := db.TimelineAt(ctx, r.id, store.TimelinePos{Depth: 99, NID: 1}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("timeline at nothing: %v", err)
	}
	if _, err := db.Timeline(ctx, "!nowhere:a.test", nil, true, 10); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown room: %v", err)
	}
}

// TestDB_UserRoomsDeleteUser: a user's rooms by membership, current or
// held as an invite; deleting the user.
func TestDB_UserRoomsDeleteUser(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t)
	joined := newTestRoom(t, "joined")
	evs := joined.genesis()
	evs = append(evs, joined.join("@bob:a.test"))
	persist(t, db, linear(evs...))
	left := newTestRoom(t, "left")
	evs = left.genesis()
	evs = append(evs, left.join("@bob:a.test"), left.next("m.room.member", rooms.StringPtr("@bob:a.test"), "@bob:a.test", map[string]any{"membership": "leave"}))
	persist(t, db, linear(evs...))
	// An invite held as an outlier in a room without state here.
	invited := newTestRoom(t, "invited")
	invited.create()
	invite := invited.build("m.room.member", rooms.StringPtr("@bob:a.test"), invited.creator, map[string]any{"membership": "invite"}, nil)
	persist(t, db, store.Batch{Events: []store.NewEvent{{Event: invite, Outcome: store.Outlier}}, RoomStatus: store.RoomInvited})

	if se, err := db.LatestMembership(ctx, invited.id, "@bob:a.test"); err != nil || se.Event.EventID() != invite.EventID() || !se.Outlier {
		t.Fatalf("latest membership in the invited room: %+v, %v", se, err)
	}
	if se, err := db.LatestMembership(ctx, left.id, "@bob:a.test"); err != nil || se.Event.Membership() != "leave" {
		t.Fatalf("latest membership in the room left: %+v, %v", se, err)
	}
	if _, err := db.LatestMembership(ctx, joined.id, "@nobody:a.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("latest membership of a stranger: %v", err)
	}
	got, err := db.UserRooms(ctx, "@bob:a.test")
	if err != nil || !slices.Equal(got, []string{invited.id, joined.id}) {
		t.Fatalf("bob's rooms %v, %v; want %v", got, err, []string{invited.id, joined.id})
	}
	if err := db.PutUser(ctx, store.User{ID: "@bob:a.test"}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteUser(ctx, "@bob:a.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.User(ctx, "@bob:a.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted user: %v", err)
	}
	if err := db.DeleteUser(ctx, "@bob:a.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting again: %v", err)
	}
}
