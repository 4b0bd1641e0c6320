package store_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

var testKey = func() rooms.SigningKey {
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, "ferry store tests, fixed seed!!!")
	return rooms.SigningKey{ServerName: "a.test", KeyID: "ed25519:1", Private: ed25519.NewKeyFromSeed(seed)}
}()

// testRoom builds a linear version-10 room of signed events and keeps the
// model of its state, for checking what the store returns.
type testRoom struct {
	tb      testing.TB
	v       rooms.Version
	id      string
	creator string
	last    []string
	depth   int64
	ts      int64
	state   store.StateMap // state after the last event
	evs     map[string]*rooms.Event
}

func newTestRoom(tb testing.TB, name string) *testRoom {
	tb.Helper()
	v, err := rooms.LookupVersion("10")
	if err != nil {
		tb.Fatal(err)
	}
	return &testRoom{tb: tb, v: v, id: "!" + name + ":a.test", creator: "@alice:a.test", ts: 1_700_000_000_000,
		state: store.StateMap{}, evs: map[string]*rooms.Event{}}
}

// authFor picks auth events the way the auth rules would: create, power
// levels, join rules and the sender's membership.
func (r *testRoom) authFor(typ, sender string, sk *string) []string {
	var out []string
	add := func(k store.StateKey) {
		if id, ok := r.state[k]; ok {
			out = append(out, id)
		}
	}
	if typ == "m.room.create" {
		return nil
	}
	add(store.StateKey{Type: "m.room.create"})
	add(store.StateKey{Type: "m.room.power_levels"})
	add(store.StateKey{Type: "m.room.member", StateKey: sender})
	if typ == "m.room.member" && sk != nil {
		add(store.StateKey{Type: "m.room.join_rules"})
		if *sk != sender {
			add(store.StateKey{Type: "m.room.member", StateKey: *sk})
		}
	}
	return out
}

// build makes the next event on top of prev (the room's last events when
// prev is nil) without advancing the room.
func (r *testRoom) build(typ string, sk *string, sender string, content map[string]any, prev []string) *rooms.Event {
	r.tb.Helper()
	if prev == nil {
		prev = r.last
	}
	r.ts++
	ev, err := rooms.BuildEvent(r.v, rooms.EventTemplate{
		Type: typ, StateKey: sk, Sender: sender, RoomID: r.id, Content: content,
		PrevEvents: prev, AuthEvents: r.authFor(typ, sender, sk), Depth: r.depth + 1, OriginServerTS: r.ts,
	}, testKey)
	if err != nil {
		r.tb.Fatal(err)
	}
	r.evs[ev.EventID()] = ev
	return ev
}

// next builds the next event and advances the room's model.
func (r *testRoom) next(typ string, sk *string, sender string, content map[string]any) *rooms.Event {
	ev := r.build(typ, sk, sender, content, nil)
	r.advance(ev)
	return ev
}

func (r *testRoom) advance(ev *rooms.Event) {
	r.last = []string{ev.EventID()}
	r.depth = ev.Depth()
	if sk, ok := ev.StateKey(); ok {
		r.state[store.StateKey{Type: ev.Type(), StateKey: sk}] = ev.EventID()
	}
}

func (r *testRoom) create() *rooms.Event {
	return r.next("m.room.create", rooms.StringPtr(""), r.creator, map[string]any{"creator": r.creator, "room_version": "10"})
}

func (r *testRoom) join(user string) *rooms.Event {
	return r.next("m.room.member", rooms.StringPtr(user), user, map[string]any{"membership": "join"})
}

func (r *testRoom) message(body string) *rooms.Event {
	return r.next("m.room.message", nil, r.creator, map[string]any{"msgtype": "m.text", "body": body})
}

// genesis returns the usual opening events: create, creator join, power
// levels, join rules.
func (r *testRoom) genesis() []*rooms.Event {
	return []*rooms.Event{
		r.create(),
		r.join(r.creator),
		r.next("m.room.power_levels", rooms.StringPtr(""), r.creator, map[string]any{"users": map[string]any{r.creator: 100}}),
		r.next("m.room.join_rules", rooms.StringPtr(""), r.creator, map[string]any{"join_rule": "public"}),
	}
}

// linear wraps events that each follow the one before: state before each
// is the state after its prev event, and the room's current state follows
// the last one.
func linear(evs ...*rooms.Event) store.Batch {
	b := store.Batch{}
	for _, ev := range evs {
		ne := store.NewEvent{Event: ev, Outcome: store.Accepted, StateBefore: &store.StateRef{}}
		if len(ev.PrevEvents()) > 0 {
			ne.StateBefore.AfterEvent = ev.PrevEvents()[0]
		}
		b.Events = append(b.Events, ne)
	}
	if len(evs) > 0 {
		b.CurrentState = &store.StateRef{AfterEvent: evs[len(evs)-1].EventID()}
	}
	return b
}

func persist(tb testing.TB, db *store.DB, b store.Batch) store.PersistResult {
	tb.Helper()
	res, err := db.PersistEvents(context.Background(), b)
	if err != nil {
		tb.Fatalf("persist: %v", err)
	}
	return res
}

func equalState(a, b store.StateMap) error {
	for k, v := range a {
		if b[k] != v {
			return fmt.Errorf("key %v: got %q, want %q", k, v, b[k])
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			return fmt.Errorf("key %v missing (want %q)", k, v)
		}
	}
	return nil
}
