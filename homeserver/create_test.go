package homeserver_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/store"
)

func TestEngine_CreateRoom_Extras(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	carol := "@carol:hs.test"
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{
		Creator: alice, Version: "12", Preset: homeserver.PresetPrivateChat,
		Name: "Lobby", Topic: "Say hello", Alias: "#lobby:hs.test",
		AdditionalCreators: []string{"@dave:elsewhere.test"}, Invite: []string{carol},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[store.StateKey]func(content map[string]any) bool{
		{Type: "m.room.name"}:            func(c map[string]any) bool { return c["name"] == "Lobby" },
		{Type: "m.room.topic"}:           func(c map[string]any) bool { return c["topic"] == "Say hello" },
		{Type: "m.room.canonical_alias"}: func(c map[string]any) bool { return c["alias"] == "#lobby:hs.test" },
		{Type: "m.room.create"}: func(c map[string]any) bool {
			extra, _ := c["additional_creators"].([]any)
			return len(extra) == 1 && extra[0] == "@dave:elsewhere.test"
		},
		{Type: "m.room.member", StateKey: carol}: func(c map[string]any) bool { return c["membership"] == "invite" },
	}
	for key, ok := range want {
		id, err := e.Store.CurrentStateEvent(ctx, roomID, key)
		if err != nil {
			t.Fatalf("%v: %v", key, err)
		}
		se, err := e.Store.Event(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !ok(se.Event.Content()) {
			t.Errorf("%v has content %v", key, se.Event.Content())
		}
	}
	if a, err := e.Store.Alias(ctx, "#lobby:hs.test"); err != nil || a.RoomID != roomID {
		t.Fatalf("alias = %+v, %v", a, err)
	}
}

func TestEngine_CreateRoom_ExtrasRefused(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	if _, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Alias: "#taken:hs.test"}); err != nil {
		t.Fatal(err)
	}
	before, err := e.Store.Rooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]homeserver.CreateRoomRequest{
		"additional creators in version 10": {Creator: alice, Version: "10", AdditionalCreators: []string{bob}},
		"bad additional creator":            {Creator: alice, Version: "12", AdditionalCreators: []string{"dave"}},
		"alias of another server":           {Creator: alice, Version: "12", Alias: "#lobby:other.test"},
		"malformed alias":                   {Creator: alice, Version: "12", Alias: "lobby"},
		"alias taken":                       {Creator: alice, Version: "12", Alias: "#taken:hs.test"},
		"bad invitee":                       {Creator: alice, Version: "12", Invite: []string{"carol"}},
		"unknown history visibility":        {Creator: alice, Version: "12", HistoryVisibility: "everyone"},
	} {
		_, err := e.CreateRoom(ctx, req)
		var he *homeserver.Error
		if !errors.As(err, &he) || !he.BadRequest() {
			t.Errorf("%s: %v, want a bad-request error", name, err)
		}
	}
	after, err := e.Store.Rooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("refused requests created rooms: %d before, %d after", len(before), len(after))
	}
}

func TestEngine_CreateRoom_FailedInviteKeepsRoom(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t) // no Remote: a remote invitee's server cannot be asked
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "10", Invite: []string{bob}})
	var ie *homeserver.InviteError
	if !errors.As(err, &ie) || ie.RoomID != roomID || ie.Failures[bob] == nil {
		t.Fatalf("err = %v, want an InviteError naming %s", err, bob)
	}
	if _, err := e.Store.Room(ctx, roomID); err != nil {
		t.Fatalf("the room should exist: %v", err)
	}
}
