package homeserver_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

const (
	ourName = "hs.test"
	remote  = "remote.test"
	alice   = "@alice:hs.test"
	bob     = "@bob:remote.test"
)

// The key ring is the engine's key source in production.
var _ homeserver.KeySource = (*keys.Ring)(nil)

// testKeys verifies signatures with roomstest's deterministic keys.
type testKeys struct{}

func (testKeys) KeyLookup(context.Context) rooms.KeyLookup { return roomstest.Keys{} }

func newEngine(t *testing.T) *homeserver.Engine {
	t.Helper()
	return &homeserver.Engine{
		ServerName: ourName, Signer: roomstest.Key(ourName), Store: storetest.Open(t), Keys: testKeys{},
		Logger: zerolog.New(zerolog.NewTestWriter(t)),
	}
}

// remoteEvent builds an event of a remote user on the room's current
// state and forward extremities, as a remote server would.
func remoteEvent(t testing.TB, e *homeserver.Engine, roomID string, typ string, stateKey *string, sender string, content map[string]any) *rooms.Event {
	t.Helper()
	ev, err := buildRemote(e, roomID, typ, stateKey, sender, content)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// buildRemote is remoteEvent for goroutines other than the test's.
func buildRemote(e *homeserver.Engine, roomID string, typ string, stateKey *string, sender string, content map[string]any) (*rooms.Event, error) {
	ctx := context.Background()
	room, err := e.Store.Room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	v, err := rooms.LookupVersion(room.Version)
	if err != nil {
		return nil, err
	}
	prev, err := e.Store.ForwardExtremities(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var depth int64
	for _, id := range prev {
		se, err := e.Store.Event(ctx, id)
		if err != nil {
			return nil, err
		}
		depth = max(depth, se.Event.Depth())
	}
	tmpl := rooms.EventTemplate{Type: typ, StateKey: stateKey, Sender: sender, RoomID: roomID, Content: content,
		PrevEvents: prev, Depth: depth + 1, OriginServerTS: 1_700_000_000_000 + depth}
	for _, k := range rooms.AuthSelectionFor(v, tmpl) {
		id, err := e.Store.CurrentStateEvent(ctx, roomID, store.StateKey(k))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		tmpl.AuthEvents = append(tmpl.AuthEvents, id)
	}
	return rooms.BuildEvent(v, tmpl, roomstest.UserKey(sender))
}

func receive(t testing.TB, e *homeserver.Engine, origin string, evs ...*rooms.Event) map[string]error {
	t.Helper()
	raws := make([][]byte, len(evs))
	for i, ev := range evs {
		raws[i] = ev.JSON()
	}
	return e.ReceivePDUs(context.Background(), origin, raws)
}

func joinRemote(t testing.TB, e *homeserver.Engine, roomID, user string) *rooms.Event {
	t.Helper()
	join := remoteEvent(t, e, roomID, "m.room.member", rooms.StringPtr(user), user, map[string]any{"membership": "join"})
	if err := receive(t, e, roomstest.ServerOf(user), join)[join.EventID()]; err != nil {
		t.Fatalf("join of %s: %v", user, err)
	}
	return join
}

func TestEngine_CreateRoom(t *testing.T) {
	for _, version := range rooms.SupportedVersionIDs() {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEngine(t)
			roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: version, Preset: homeserver.PresetPrivateChat})
			if err != nil {
				t.Fatal(err)
			}
			v, _ := rooms.LookupVersion(version)
			if _, err := rooms.ParseRoomIDFor(v, roomID); err != nil {
				t.Fatalf("room ID %s: %v", roomID, err)
			}
			state, err := e.Store.CurrentState(ctx, roomID)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []store.StateKey{{Type: "m.room.create", StateKey: ""}, {Type: "m.room.member", StateKey: alice}, {Type: "m.room.power_levels", StateKey: ""}, {Type: "m.room.join_rules", StateKey: ""}, {Type: "m.room.history_visibility", StateKey: ""}} {
				if state[k] == "" {
					t.Fatalf("current state lacks %v", k)
				}
			}
			jr, err := e.Store.Event(ctx, state[store.StateKey{Type: "m.room.join_rules", StateKey: ""}])
			if err != nil || jr.Event.Content()["join_rule"] != "invite" {
				t.Fatalf("join rules %v, %v", jr, err)
			}
			ext, err := e.Store.ForwardExtremities(ctx, roomID)
			if err != nil || len(ext) != 1 || ext[0] != state[store.StateKey{Type: "m.room.history_visibility", StateKey: ""}] {
				t.Fatalf("extremities %v, %v", ext, err)
			}
			log, err := e.Store.ReadHostLog(ctx, 0, 100)
			if err != nil || len(log) != 5 {
				t.Fatalf("host log has %d entries (%v), want the 5 events", len(log), err)
			}
			room, err := e.Store.Room(ctx, roomID)
			if err != nil || room.Status != store.RoomCreated {
				t.Fatalf("room %+v, %v", room, err)
			}
		})
	}
}

func TestEngine_CreateRoom_BadRequests(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	for name, req := range map[string]homeserver.CreateRoomRequest{
		"unknown version": {Creator: alice, Version: "1"},
		"remote creator":  {Creator: bob, Version: "10"},
		"bad creator":     {Creator: "alice", Version: "10"},
		"unknown preset":  {Creator: alice, Version: "10", Preset: "trusted_private_chat_x"},
	} {
		_, err := e.CreateRoom(ctx, req)
		var he *homeserver.Error
		if !errors.As(err, &he) || !he.BadRequest() {
			t.Errorf("%s: %v, want a bad request", name, err)
		}
	}
}

func TestEngine_SendEvent(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	joinRemote(t, e, roomID, bob)

	// A local message is queued for the remote server.
	msg, err := e.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.message", Sender: alice, Content: map[string]any{"body": "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	if dests, err := e.Store.PendingDestinations(ctx); err != nil || !slices.Equal(dests, []string{remote}) {
		t.Fatalf("pending destinations %v, %v", dests, err)
	}
	if ext, _ := e.Store.ForwardExtremities(ctx, roomID); !slices.Equal(ext, []string{msg.EventID()}) {
		t.Fatalf("extremities %v", ext)
	}

	// A local user who is not joined is refused.
	_, err = e.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.message", Sender: "@mallory:hs.test", Content: map[string]any{"body": "x"}})
	var he *homeserver.Error
	if !errors.As(err, &he) || !he.Forbidden() {
		t.Fatalf("non-member: %v, want forbidden", err)
	}
	// So is a room we are not in.
	_, err = e.SendEvent(ctx, "!nowhere:hs.test", homeserver.LocalEvent{Type: "m.room.message", Sender: alice})
	if !errors.As(err, &he) || !he.NotFound() {
		t.Fatalf("unknown room: %v, want not found", err)
	}

	// The admin redacts bob's message: the stored copy is redacted.
	bobMsg := remoteEvent(t, e, roomID, "m.room.message", nil, bob, map[string]any{"body": "secret"})
	if err := receive(t, e, remote, bobMsg)[bobMsg.EventID()]; err != nil {
		t.Fatal(err)
	}
	if _, err := e.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.redaction", Sender: alice, Redacts: bobMsg.EventID(), Content: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	se, err := e.Store.Event(ctx, bobMsg.EventID())
	if err != nil || !se.Redacted || len(se.Event.Content()) != 0 {
		t.Fatalf("redacted event: %+v, %v", se, err)
	}
}

// TestEngine_ParallelRooms receives joins and messages for several rooms
// at once; each room's events are serialized, rooms run in parallel.
func TestEngine_ParallelRooms(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	const nRooms, nMessages = 4, 5
	roomIDs := make([]string, nRooms)
	for i := range roomIDs {
		var err error
		if roomIDs[i], err = e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "10", Preset: homeserver.PresetPublicChat}); err != nil {
			t.Fatal(err)
		}
		joinRemote(t, e, roomIDs[i], bob)
	}
	var wg sync.WaitGroup
	errs := make(chan error, nRooms*nMessages*2)
	for _, roomID := range roomIDs {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range nMessages {
				ev, err := buildRemote(e, roomID, "m.room.message", nil, bob, map[string]any{"body": fmt.Sprint(i)})
				if err != nil {
					errs <- err
					continue
				}
				if err := e.ReceivePDUs(ctx, remote, [][]byte{ev.JSON()})[ev.EventID()]; err != nil {
					errs <- err
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := range nMessages {
				if _, err := e.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.message", Sender: alice, Content: map[string]any{"body": fmt.Sprint(i)}}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		// A remote event built on extremities a concurrent local event
		// replaced forks the room, which must still be accepted.
		t.Error(err)
	}
	for _, roomID := range roomIDs {
		log, err := e.Store.ReadHostLog(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range log {
			if r.RoomID == roomID {
				n++
			}
		}
		if want := 5 + 1 + 2*nMessages; n != want {
			t.Fatalf("room %s: %d host log entries, want %d", roomID, n, want)
		}
	}
}

func TestEngine_EDUs(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "10", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	joinRemote(t, e, roomID, bob)
	typing := func(user string) []byte {
		return []byte(fmt.Sprintf(`{"room_id":%q,"user_id":%q,"typing":true}`, roomID, user))
	}
	if err := e.ReceiveEDU(ctx, remote, "m.typing", typing(bob)); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		origin, typ string
		content     []byte
		want        string
	}{
		"user of another server": {remote, "m.typing", typing(alice), "not a user of"},
		"not joined":             {remote, "m.typing", typing("@carol:remote.test"), "not joined"},
		"unknown room":           {remote, "m.typing", []byte(`{"room_id":"!x:hs.test","user_id":"@bob:remote.test","typing":true}`), "not in room"},
		"missing fields":         {remote, "m.typing", []byte(`{"room_id":"!x:hs.test"}`), "required"},
		"receipt of a stranger":  {remote, "m.receipt", []byte(fmt.Sprintf(`{%q:{"m.read":{"@carol:remote.test":{"event_ids":[]}}}}`, roomID)), "not joined"},
		"not JSON":               {remote, "m.typing", []byte(`{`), "JSON"},
		"presence of a stranger": {remote, "m.presence", []byte(`{"push":[{"user_id":"@alice:hs.test","presence":"online"}]}`), "not a user of"},
		"unknown presence":       {remote, "m.presence", []byte(`{"push":[{"user_id":"@bob:remote.test","presence":"asleep"}]}`), "not online"},
		"presence without push":  {remote, "m.presence", []byte(`{}`), "push must be an array"},
	} {
		err := e.ReceiveEDU(ctx, c.origin, c.typ, c.content)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, c.want)
		}
	}
	for _, typ := range []string{"m.device_list_update", "m.signing_key_update", "m.direct_to_device", "org.example.custom"} {
		if err := e.ReceiveEDU(ctx, remote, typ, []byte(`{}`)); err != nil {
			t.Fatalf("%s is accepted without error: %v", typ, err)
		}
	}
	presence := `{"push":[{"user_id":"@bob:remote.test","presence":"online","last_active_ago":5,"currently_active":true,"extra":1}]}`
	if err := e.ReceiveEDU(ctx, remote, "m.presence", []byte(presence)); err != nil {
		t.Fatal(err)
	}
	log, err := e.Store.ReadHostLog(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var edus []string
	for _, r := range log {
		if r.Kind == store.HostEDU {
			edus = append(edus, string(r.Payload))
		}
	}
	wantPresence := `{"content":{"push":[{"currently_active":true,"last_active_ago":5,"presence":"online","user_id":"@bob:remote.test"}]},"type":"m.presence"}`
	if len(edus) != 2 || !strings.Contains(edus[0], `"type":"m.typing"`) || edus[1] != wantPresence {
		t.Fatalf("host log EDUs %q, want bob's typing and his presence (without unknown fields)", edus)
	}
}

func TestEngine_ReadsRefused(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "10"})
	if err != nil {
		t.Fatal(err)
	}
	ext, _ := e.Store.ForwardExtremities(ctx, roomID)
	var he *homeserver.Error
	// A server with no member in the room may not read it.
	if _, _, err := e.StateIDs(ctx, remote, roomID, ext[0]); !errors.As(err, &he) || !he.Forbidden() {
		t.Fatalf("state_ids by a stranger: %v", err)
	}
	if _, err := e.Event(ctx, remote, ext[0]); !errors.As(err, &he) || !he.Forbidden() {
		t.Fatalf("event by a stranger: %v", err)
	}
	if _, err := e.Backfill(ctx, remote, "!unknown:hs.test", ext, 5); !errors.As(err, &he) || !he.NotFound() {
		t.Fatalf("backfill of an unknown room: %v", err)
	}
	// PDUs for a room we are not in are dropped with a per-PDU error.
	ev := remoteEvent(t, e, roomID, "m.room.message", nil, bob, map[string]any{"body": "x"})
	obj := ev.Object()
	other := map[string]any{}
	for k, v := range obj {
		other[k] = v
	}
	other["room_id"] = "!other:remote.test"
	if err := rooms.SignEvent(ev.Version(), other, roomstest.Key(remote)); err != nil {
		t.Fatal(err)
	}
	elsewhere, err := rooms.NewEventFromObject(ev.Version(), other)
	if err != nil {
		t.Fatal(err)
	}
	if err := receive(t, e, remote, elsewhere)[elsewhere.EventID()]; !errors.Is(err, homeserver.ErrDropped) {
		t.Fatalf("PDU for an unknown room: %v, want dropped", err)
	}
	// A join to an invite-only room is rejected and stored as such.
	join := remoteEvent(t, e, roomID, "m.room.member", rooms.StringPtr(bob), bob, map[string]any{"membership": "join"})
	if err := receive(t, e, remote, join)[join.EventID()]; !errors.Is(err, homeserver.ErrRejected) {
		t.Fatalf("join of an invite-only room: %v, want rejected", err)
	}
	if se, err := e.Store.Event(ctx, join.EventID()); err != nil || !se.Rejected {
		t.Fatalf("rejected join stored as %+v, %v", se, err)
	}
}

// builder builds a remote server's events on a chain it tracks itself,
// for several events sent in one transaction.
type builder struct {
	t     *testing.T
	v     rooms.Version
	room  string
	state map[rooms.StateTuple]string
	depth int64
	ts    int64
}

func newBuilder(t *testing.T, e *homeserver.Engine, roomID string) *builder {
	t.Helper()
	ctx := context.Background()
	room, err := e.Store.Room(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := rooms.LookupVersion(room.Version)
	cur, err := e.Store.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	b := &builder{t: t, v: v, room: roomID, state: map[rooms.StateTuple]string{}, depth: 100, ts: 1_800_000_000_000}
	for k, id := range cur {
		b.state[rooms.StateTuple(k)] = id
	}
	return b
}

func (b *builder) build(typ string, stateKey *string, sender string, content map[string]any, prev ...string) *rooms.Event {
	b.t.Helper()
	b.depth++
	b.ts++
	tmpl := rooms.EventTemplate{Type: typ, StateKey: stateKey, Sender: sender, RoomID: b.room, Content: content,
		PrevEvents: prev, Depth: b.depth, OriginServerTS: b.ts}
	for _, k := range rooms.AuthSelectionFor(b.v, tmpl) {
		if id, ok := b.state[k]; ok {
			tmpl.AuthEvents = append(tmpl.AuthEvents, id)
		}
	}
	ev, err := rooms.BuildEvent(b.v, tmpl, roomstest.UserKey(sender))
	if err != nil {
		b.t.Fatal(err)
	}
	if k, ok := rooms.StateTupleOf(ev); ok {
		b.state[k] = ev.EventID()
	}
	return ev
}

// TestEngine_OneTransaction receives a run of dependent events in one
// call: a join and the joiner's messages (its auth events and prev events
// decided earlier in the same transaction), a fork of two events on one
// parent, an event the state rejects and a redaction, all committed
// together.
func TestEngine_OneTransaction(t *testing.T) {
	for _, version := range rooms.SupportedVersionIDs() {
		t.Run("v"+version, func(t *testing.T) {
			ctx := context.Background()
			e := newEngine(t)
			roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: version, Preset: homeserver.PresetPublicChat})
			if err != nil {
				t.Fatal(err)
			}
			ext, _ := e.Store.ForwardExtremities(ctx, roomID)
			b := newBuilder(t, e, roomID)
			join := b.build("m.room.member", rooms.StringPtr(bob), bob, map[string]any{"membership": "join"}, ext...)
			m1 := b.build("m.room.message", nil, bob, map[string]any{"body": "1"}, join.EventID())
			forkA := b.build("m.room.message", nil, bob, map[string]any{"body": "a"}, m1.EventID())
			forkB := b.build("m.room.message", nil, bob, map[string]any{"body": "b"}, m1.EventID())
			// Bob may not change the power levels (state_default 50 and
			// the power levels event's own level).
			plBefore := b.state[rooms.StateTuple{Type: "m.room.power_levels"}]
			pl := b.build("m.room.power_levels", rooms.StringPtr(""), bob, map[string]any{"users": map[string]any{bob: 100}}, forkA.EventID(), forkB.EventID())
			b.state[rooms.StateTuple{Type: "m.room.power_levels"}] = plBefore // the remote knows it will be rejected
			merge := b.build("m.room.message", nil, bob, map[string]any{"body": "merge"}, forkA.EventID(), forkB.EventID())
			redact := b.buildRedaction(bob, m1.EventID(), merge.EventID())

			res := receive(t, e, remote, redact, merge, pl, forkB, forkA, m1, join)
			for _, ev := range []*rooms.Event{join, m1, forkA, forkB, merge, redact} {
				if err := res[ev.EventID()]; err != nil {
					t.Fatalf("event %s: %v", ev.EventID(), err)
				}
			}
			if err := res[pl.EventID()]; !errors.Is(err, homeserver.ErrRejected) {
				t.Fatalf("power levels by a member without power: %v, want rejected", err)
			}
			if ext, _ := e.Store.ForwardExtremities(ctx, roomID); !slices.Equal(ext, []string{redact.EventID()}) {
				t.Fatalf("extremities %v, want the redaction", ext)
			}
			se, err := e.Store.Event(ctx, m1.EventID())
			if err != nil || !se.Redacted {
				t.Fatalf("redacted message: %+v, %v", se, err)
			}
			cur, err := e.Store.CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.power_levels"})
			if err != nil || cur == pl.EventID() {
				t.Fatalf("current power levels %s, %v: the rejected event must not be state", cur, err)
			}
			log, err := e.Store.ReadHostLog(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var logged []string
			for _, r := range log {
				logged = append(logged, r.EventID)
			}
			for _, ev := range []*rooms.Event{join, m1, forkA, forkB, merge, redact} {
				if !slices.Contains(logged, ev.EventID()) {
					t.Fatalf("host log lacks %s", ev.EventID())
				}
			}
			if slices.Contains(logged, pl.EventID()) {
				t.Fatal("host log has the rejected event")
			}
		})
	}
}

func (b *builder) buildRedaction(sender, target string, prev ...string) *rooms.Event {
	b.t.Helper()
	b.depth++
	b.ts++
	tmpl := rooms.EventTemplate{Type: "m.room.redaction", Sender: sender, RoomID: b.room, Content: map[string]any{},
		PrevEvents: prev, Depth: b.depth, OriginServerTS: b.ts, Redacts: target}
	for _, k := range rooms.AuthSelectionFor(b.v, tmpl) {
		if id, ok := b.state[k]; ok {
			tmpl.AuthEvents = append(tmpl.AuthEvents, id)
		}
	}
	ev, err := rooms.BuildEvent(b.v, tmpl, roomstest.UserKey(sender))
	if err != nil {
		b.t.Fatal(err)
	}
	return ev
}

// TestEngine_MalformedPDUs: whatever arrives, nothing panics, nothing is
// stored, and PDUs whose ID can be computed get an error.
func TestEngine_MalformedPDUs(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	join := remoteEvent(t, e, roomID, "m.room.member", rooms.StringPtr(bob), bob, map[string]any{"membership": "join"})
	noPrev := map[string]any{}
	for k, v := range join.Object() {
		noPrev[k] = v
	}
	delete(noPrev, "prev_events")
	noPrevJSON, _ := rooms.EncodeCanonical(noPrev)
	raws := [][]byte{
		[]byte(`1`), []byte(`[]`), []byte(`null`), []byte(`{`), []byte(`{"room_id": 5}`),
		[]byte(fmt.Sprintf(`{"room_id": %q}`, roomID)),
		[]byte(fmt.Sprintf(`{"room_id": %q, "type": "m.room.message", "content": "x"}`, roomID)),
		noPrevJSON,
		[]byte(`{"type":"m.room.create","content":{"room_version":"12"},"sender":"@x:remote.test"}`),
		append([]byte(fmt.Sprintf(`{"room_id": %q, "pad": "`, roomID)), append(make([]byte, 70000), '"', '}')...),
	}
	res := e.ReceivePDUs(ctx, remote, raws)
	for id, err := range res {
		if err == nil {
			t.Errorf("malformed PDU %s accepted", id)
		}
	}
	if log, err := e.Store.ReadHostLog(ctx, 0, 100); err != nil || len(log) != 5 {
		t.Fatalf("host log has %d entries (%v), want the 5 of the room's creation", len(log), err)
	}
}

// TestEngine_HistoryVisibility: in a room whose history is visible to
// joined members only, a server reading history gets events from before
// its users joined redacted, and later ones whole.
func TestEngine_HistoryVisibility(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "10", Preset: homeserver.PresetPublicChat, HistoryVisibility: "joined"})
	if err != nil {
		t.Fatal(err)
	}
	before, err := e.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.message", Sender: alice, Content: map[string]any{"body": "before bob"}})
	if err != nil {
		t.Fatal(err)
	}
	join := joinRemote(t, e, roomID, bob)
	after, err := e.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.message", Sender: alice, Content: map[string]any{"body": "after bob"}})
	if err != nil {
		t.Fatal(err)
	}
	contentOf := func(raw []byte) map[string]any {
		t.Helper()
		ev, err := rooms.ParseEvent(before.Version(), raw)
		if err != nil {
			t.Fatal(err)
		}
		return ev.Content()
	}
	raw, err := e.Event(ctx, remote, before.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if c := contentOf(raw); len(c) != 0 {
		t.Fatalf("message from before bob joined served with content %v", c)
	}
	raw, err = e.Event(ctx, remote, after.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if c := contentOf(raw); c["body"] != "after bob" {
		t.Fatalf("message after bob joined served with content %v", c)
	}
	back, err := e.Backfill(ctx, remote, roomID, []string{after.EventID()}, 3)
	if err != nil || len(back) != 3 {
		t.Fatalf("backfill: %d events, %v", len(back), err)
	}
	bodies := map[string]any{}
	for _, raw := range back {
		ev, _ := rooms.ParseEvent(before.Version(), raw)
		bodies[ev.EventID()] = ev.Content()["body"]
	}
	if bodies[after.EventID()] != "after bob" || bodies[before.EventID()] != nil {
		t.Fatalf("backfill bodies %v", bodies)
	}
	if _, ok := bodies[join.EventID()]; !ok {
		t.Fatalf("backfill lacks bob's join: %v", bodies)
	}
}

// TestEngine_RedactionBeforeTarget: a redaction accepted before its target
// arrives is applied when the target is stored.
func TestEngine_RedactionBeforeTarget(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	joinRemote(t, e, roomID, bob)
	ext, _ := e.Store.ForwardExtremities(ctx, roomID)
	b := newBuilder(t, e, roomID)
	msg := b.build("m.room.message", nil, bob, map[string]any{"body": "regret"}, ext...)
	redaction := b.buildRedaction(bob, msg.EventID(), ext...)
	if err := receive(t, e, remote, redaction)[redaction.EventID()]; err != nil {
		t.Fatal(err)
	}
	if err := receive(t, e, remote, msg)[msg.EventID()]; err != nil {
		t.Fatal(err)
	}
	se, err := e.Store.Event(ctx, msg.EventID())
	if err != nil || !se.Redacted || len(se.Event.Content()) != 0 {
		t.Fatalf("target stored after its redaction: %+v, %v", se, err)
	}
}

// failingRemote answers every request with an error.
type failingRemote struct{ asked []string }

func (f *failingRemote) GetMissingEvents(context.Context, string, string, []string, []string, int, int64) ([][]byte, error) {
	f.asked = append(f.asked, "get_missing_events")
	return nil, errors.New("remote unreachable")
}

func (f *failingRemote) StateIDs(context.Context, string, string, string) ([]string, []string, error) {
	f.asked = append(f.asked, "state_ids")
	return nil, nil, errors.New("remote unreachable")
}

func (f *failingRemote) Event(context.Context, string, string) ([]byte, error) {
	f.asked = append(f.asked, "event")
	return nil, errors.New("remote unreachable")
}

// TestEngine_GapNotFilled: a PDU whose prev events cannot be fetched is
// refused with a per-PDU error naming them, after asking the origin with
// /get_missing_events and /state_ids, and is not stored.
func TestEngine_GapNotFilled(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	remoteAPI := &failingRemote{}
	e.Remote = remoteAPI
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "10", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	joinRemote(t, e, roomID, bob)
	ext, _ := e.Store.ForwardExtremities(ctx, roomID)
	b := newBuilder(t, e, roomID)
	unseen := b.build("m.room.message", nil, bob, map[string]any{"body": "never sent"}, ext...)
	orphan := b.build("m.room.message", nil, bob, map[string]any{"body": "orphan"}, unseen.EventID())
	err = receive(t, e, remote, orphan)[orphan.EventID()]
	if !errors.Is(err, homeserver.ErrDropped) || !strings.Contains(err.Error(), unseen.EventID()) {
		t.Fatalf("PDU with an unfillable gap: %v", err)
	}
	if !slices.Equal(remoteAPI.asked, []string{"get_missing_events", "state_ids"}) {
		t.Fatalf("remote asked %v", remoteAPI.asked)
	}
	if _, err := e.Store.Event(ctx, orphan.EventID()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("orphan stored: %v", err)
	}
}
