package rooms

import (
	"errors"
	"reflect"
	"testing"
)

// synthEvent builds an unsigned event under a readable ID, as the state
// resolution vectors do. sk nil makes a non-state event.
func srEvent(tb testing.TB, v Version, id, typ string, sk *string, sender string, content map[string]any, auth []string, ts int64) *Event {
	tb.Helper()
	obj := map[string]any{
		"type":             typ,
		"sender":           sender,
		"content":          content,
		"auth_events":      toAnyList(auth),
		"prev_events":      []any{},
		"origin_server_ts": ts,
		"depth":            int64(1),
	}
	if sk != nil {
		obj["state_key"] = *sk
	}
	if !(typ == "m.room.create" && v.RoomIDs == RoomIDFromCreate) {
		obj["room_id"] = "!room:example.org"
		if v.RoomIDs == RoomIDFromCreate {
			obj["room_id"] = "!create"
		}
	}
	raw, err := EncodeCanonical(obj)
	if err != nil {
		tb.Fatal(err)
	}
	ev, err := ParseEventTrusted(v, raw, id)
	if err != nil {
		tb.Fatal(err)
	}
	return ev
}

func TestAuthChainCache_Chains(t *testing.T) {
	v10 := mustVersion(t, "10")
	empty := StringPtr("")
	alice := StringPtr("@alice:example.org")
	evs := []*Event{
		srEvent(t, v10, "$create", "m.room.create", empty, "@alice:example.org", map[string]any{"creator": "@alice:example.org"}, nil, 0),
		srEvent(t, v10, "$join", "m.room.member", alice, "@alice:example.org", map[string]any{"membership": "join"}, []string{"$create"}, 1),
		srEvent(t, v10, "$pl", "m.room.power_levels", empty, "@alice:example.org", map[string]any{}, []string{"$create", "$join"}, 2),
		srEvent(t, v10, "$topic", "m.room.topic", empty, "@alice:example.org", map[string]any{}, []string{"$create", "$pl", "$join", "$pl"}, 3),
	}
	src := NewEventSet(evs...)
	cache := NewAuthChainCache()
	cases := map[string][]string{
		"$create": {},
		"$join":   {"$create"},
		"$pl":     {"$create", "$join"},
		"$topic":  {"$create", "$join", "$pl"},
	}
	for id, want := range cases {
		got, err := cache.AuthChain(src, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("chain(%s) = %v, want %v", id, got, want)
		}
	}
	if cache.Len() != len(cases) {
		t.Errorf("cache holds %d chains, want %d", cache.Len(), len(cases))
	}
	var kids []string
	if err := src.AuthChildren("$create", func(c string) bool { kids = append(kids, c); return true }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(kids, []string{"$join", "$pl", "$topic"}) {
		t.Errorf("children of $create = %v", kids)
	}
}

func TestAuthChainCache_ImpliedCreateV12(t *testing.T) {
	v12 := mustVersion(t, "12")
	empty := StringPtr("")
	alice := StringPtr("@alice:example.org")
	evs := []*Event{
		srEvent(t, v12, "$create", "m.room.create", empty, "@alice:example.org", map[string]any{}, nil, 0),
		srEvent(t, v12, "$join", "m.room.member", alice, "@alice:example.org", map[string]any{"membership": "join"}, nil, 1),
		srEvent(t, v12, "$pl", "m.room.power_levels", empty, "@alice:example.org", map[string]any{}, []string{"$join"}, 2),
	}
	got, err := NewAuthChainCache().AuthChain(NewEventSet(evs...), "$pl")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"$create", "$join"}; !reflect.DeepEqual(got, want) {
		t.Errorf("chain = %v, want %v (the create event is implied by the room ID)", got, want)
	}
}

func TestAuthChainCache_Errors(t *testing.T) {
	v10 := mustVersion(t, "10")
	empty := StringPtr("")
	t.Run("Missing", func(t *testing.T) {
		src := NewEventSet(srEvent(t, v10, "$a", "m.room.topic", empty, "@a:x", map[string]any{}, []string{"$gone"}, 1))
		_, err := NewAuthChainCache().AuthChain(src, "$a")
		if !errors.Is(err, ErrEventNotFound) {
			t.Fatalf("err = %v, want ErrEventNotFound", err)
		}
	})
	t.Run("Cycle", func(t *testing.T) {
		src := NewEventSet(
			srEvent(t, v10, "$a", "m.room.topic", empty, "@a:x", map[string]any{}, []string{"$b"}, 1),
			srEvent(t, v10, "$b", "m.room.name", empty, "@a:x", map[string]any{}, []string{"$a"}, 1),
		)
		_, err := NewAuthChainCache().AuthChain(src, "$a")
		if !errors.Is(err, ErrAuthCycle) {
			t.Fatalf("err = %v, want ErrAuthCycle", err)
		}
	})
}
