package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// TestServe_DeliversLocalEvents runs two `ferry serve` instances: a user
// of B joins a room of A (B signs the join and sends it), then a message
// sent on A is queued by the engine, announced to the delivery and sent
// to B over federation; A's health of B shows the delivery.
func TestServe_DeliversLocalEvents(t *testing.T) {
	a, nameA := startFederating(t)
	b, nameB := startFederating(t)
	ctx := context.Background()
	alice := "@alice:" + nameA
	roomID, err := a.inst.Engine().CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	bob := "@bob:" + nameB
	join := joinOn(t, a.inst.Store(), roomID, bob, b.inst.Keys().Signer(nameB))
	res, err := b.inst.Client().SendTransaction(ctx, nameA, "join-1", []json.RawMessage{join.JSON()}, nil)
	if err != nil || res[join.EventID()] != "" {
		t.Fatalf("join: %v, %v", res, err)
	}
	if _, err := a.inst.Engine().SendEvent(ctx, roomID, homeserver.LocalEvent{
		Type: "m.room.message", Sender: alice, Content: map[string]any{"body": "hello B"},
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		all, err := a.inst.Delivery().Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) == 1 && all[0].Name == nameB && all[0].TxnsSent >= 1 && all[0].Queued == 0 && !all[0].LastSuccess.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health of the destinations: %+v", all)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// joinOn builds the join of user to roomID on the room's state as held in
// db, signed by the user's server.
func joinOn(t *testing.T, db *store.DB, roomID, user string, signer rooms.SigningKey) *rooms.Event {
	t.Helper()
	ctx := context.Background()
	room, err := db.Room(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	v, err := rooms.LookupVersion(room.Version)
	if err != nil {
		t.Fatal(err)
	}
	prev, err := db.ForwardExtremities(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	var depth int64
	for _, id := range prev {
		se, err := db.Event(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		depth = max(depth, se.Event.Depth())
	}
	tmpl := rooms.EventTemplate{Type: "m.room.member", StateKey: rooms.StringPtr(user), Sender: user, RoomID: roomID,
		Content: map[string]any{"membership": "join"}, PrevEvents: prev, Depth: depth + 1, OriginServerTS: time.Now().UnixMilli()}
	for _, k := range rooms.AuthSelectionFor(v, tmpl) {
		id, err := db.CurrentStateEvent(ctx, roomID, store.StateKey(k))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		tmpl.AuthEvents = append(tmpl.AuthEvents, id)
	}
	ev, err := rooms.BuildEvent(v, tmpl, signer)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}
