package rooms_test

import (
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

// createSpec describes a create event of version v sent by sender with
// extra content keys.
func createSpec(v rooms.Version, sender string, extra map[string]any) roomstest.Spec {
	content := map[string]any{"room_version": v.ID}
	if v.CreateHasCreator {
		content["creator"] = sender
	}
	for k, val := range extra {
		if val == nil {
			delete(content, k)
			continue
		}
		content[k] = val
	}
	return roomstest.Spec{Type: "m.room.create", StateKey: rooms.StringPtr(""), Sender: sender, Content: content, PrevEvents: []string{}}
}

func checkCreate(t *testing.T, ev *rooms.Event) error {
	t.Helper()
	byState := rooms.CheckAuth(ev, nil)
	byAuth := rooms.CheckAuthEvents(ev, nil, nil, nil)
	if (byState == nil) != (byAuth == nil) {
		t.Fatalf("CheckAuth says %v but CheckAuthEvents says %v", byState, byAuth)
	}
	return byState
}

// v10 1.1 / v12 1.1: a create event has no prev_events.
func TestAuthCreate_1_1_PrevEvents(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{Minimal: true})
		if err := checkCreate(t, r.Create()); err != nil {
			t.Fatalf("the room's create event: %v", err)
		}
		s := createSpec(v, alice, nil)
		s.PrevEvents = []string{r.Create().EventID()}
		ev := r.Build(s)
		wantAuthError(t, ev, checkCreate(t, ev), "create", "has prev_events")
	})
}

// v10 1.2: the room ID's domain is the sender's.
func TestAuthCreate_v10_1_2_RoomIDDomain(t *testing.T) {
	v := version(t, "10")
	r := newRoom(t, v, roomstest.Options{Minimal: true, RoomID: "!room:a.test"})
	if err := checkCreate(t, r.Build(createSpec(v, ann, nil))); err != nil {
		t.Fatalf("create by another a.test user: %v", err)
	}
	ev := r.Build(createSpec(v, bob, nil))
	wantAuthError(t, ev, checkCreate(t, ev), "create", `room ID's server "a.test" is not the sender's server "b.test"`)
}

// v12 1.2: a create event has no room_id. The builder (rightly) refuses to
// make such an event, so it is signed and parsed as a trusted event.
func TestAuthCreate_v12_1_2_HasRoomID(t *testing.T) {
	v := version(t, "12")
	r := newRoom(t, v, roomstest.Options{Minimal: true})
	if err := checkCreate(t, r.Create()); err != nil {
		t.Fatalf("create without room_id: %v", err)
	}
	obj := map[string]any{
		"type": "m.room.create", "state_key": "", "sender": alice, "room_id": "!abc",
		"content": map[string]any{"room_version": "12"}, "prev_events": []any{}, "auth_events": []any{},
		"depth": int64(1), "origin_server_ts": int64(1),
	}
	if err := rooms.SignEvent(v, obj, roomstest.UserKey(alice)); err != nil {
		t.Fatal(err)
	}
	raw, err := rooms.EncodeCanonical(obj)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := rooms.ParseEventTrusted(v, raw, "$create-with-room-id")
	if err != nil {
		t.Fatal(err)
	}
	wantAuthError(t, ev, checkCreate(t, ev), "create", "has a room_id")
}

// v10 1.3 / v12 1.3: content.room_version, if present, is recognised.
func TestAuthCreate_1_3_RoomVersion(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{Minimal: true})
		if err := checkCreate(t, r.Build(createSpec(v, alice, map[string]any{"room_version": nil}))); err != nil {
			t.Errorf("absent room_version: %v", err)
		}
		ev := r.Build(createSpec(v, alice, map[string]any{"room_version": "9"}))
		wantAuthError(t, ev, checkCreate(t, ev), "create", `room_version "9" is not a recognised version`)
		ev = r.Build(createSpec(v, alice, map[string]any{"room_version": 10}))
		wantAuthError(t, ev, checkCreate(t, ev), "create", "room_version is not a string")
	})
}

// v10 1.4: content.creator is required.
func TestAuthCreate_v10_1_4_Creator(t *testing.T) {
	v := version(t, "10")
	r := newRoom(t, v, roomstest.Options{Minimal: true})
	ev := r.Build(createSpec(v, alice, map[string]any{"creator": nil}))
	wantAuthError(t, ev, checkCreate(t, ev), "create", "no creator")
	if err := checkCreate(t, r.Build(createSpec(v, alice, nil))); err != nil {
		t.Fatalf("create with creator: %v", err)
	}
	// Version 12 has no such rule: its create events carry no creator.
	v12 := version(t, "12")
	r12 := newRoom(t, v12, roomstest.Options{Minimal: true})
	if _, has := r12.Create().Content()["creator"]; has {
		t.Fatal("version 12 create carries creator")
	}
	if err := checkCreate(t, r12.Create()); err != nil {
		t.Fatalf("v12 create without creator: %v", err)
	}
}

// v12 1.4: additional_creators is an array of valid user IDs.
func TestAuthCreate_v12_1_4_AdditionalCreators(t *testing.T) {
	v := version(t, "12")
	r := newRoom(t, v, roomstest.Options{Minimal: true})
	ok := r.Build(createSpec(v, alice, map[string]any{"additional_creators": []any{bob, "@carol:c.test:8448"}}))
	if err := checkCreate(t, ok); err != nil {
		t.Fatalf("valid additional_creators: %v", err)
	}
	for name, tc := range map[string]struct {
		value  any
		reason string
	}{
		"not an array":  {bob, "additional_creators is not an array"},
		"not a string":  {[]any{bob, 5}, "additional_creators[1] is not a valid user ID"},
		"not a user ID": {[]any{"carol"}, "additional_creators[0] is not a valid user ID"},
		"bad server":    {[]any{"@carol:bad_server!"}, "additional_creators[0] is not a valid user ID"},
	} {
		t.Run(name, func(t *testing.T) {
			ev := r.Build(createSpec(v, alice, map[string]any{"additional_creators": tc.value}))
			wantAuthError(t, ev, checkCreate(t, ev), "create", tc.reason)
		})
	}
}
