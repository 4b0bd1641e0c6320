package homeserver_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

// inProcessRemote is the federation between two real engines without
// HTTP: each request of ours is the resident engine's answer to origin.
// Backfill answers pass through tamper, which lets a test play a resident
// that sends forged history.
type inProcessRemote struct {
	origin   string
	resident *homeserver.Engine
	tamper   func([][]byte) [][]byte
}

var (
	_ homeserver.Remote     = (*inProcessRemote)(nil)
	_ homeserver.Joiner     = (*inProcessRemote)(nil)
	_ homeserver.Backfiller = (*inProcessRemote)(nil)
)

func (r *inProcessRemote) GetMissingEvents(ctx context.Context, _, roomID string, earliest, latest []string, limit int, minDepth int64) ([][]byte, error) {
	return r.resident.MissingEvents(ctx, r.origin, roomID, earliest, latest, limit, minDepth)
}

func (r *inProcessRemote) StateIDs(ctx context.Context, _, roomID, eventID string) ([]string, []string, error) {
	return r.resident.StateIDs(ctx, r.origin, roomID, eventID)
}

func (r *inProcessRemote) Event(ctx context.Context, _, eventID string) ([]byte, error) {
	return r.resident.Event(ctx, r.origin, eventID)
}

func (r *inProcessRemote) MakeJoin(ctx context.Context, _, roomID, userID string, versions []string) (string, []byte, error) {
	return r.resident.MakeJoin(ctx, r.origin, roomID, userID, versions)
}

func (r *inProcessRemote) SendJoin(ctx context.Context, _, roomID, eventID string, event []byte) ([][]byte, [][]byte, []byte, error) {
	state, chain, join, _, err := r.resident.SendJoin(ctx, r.origin, roomID, eventID, event)
	return state, chain, join, err
}

func (r *inProcessRemote) Backfill(ctx context.Context, _, roomID string, from []string, limit int) ([][]byte, error) {
	pdus, err := r.resident.Backfill(ctx, r.origin, roomID, from, limit)
	if err != nil || r.tamper == nil {
		return pdus, err
	}
	return r.tamper(pdus), nil
}

// TestHost_BackfillChecksEvents: history backfilled from a resident that
// slips in a forged event (bad signature) and an event its own auth
// events do not allow: the forged one is left out, the unauthorised one
// kept as rejected, neither reaches the timeline, and the genuine history
// does, down to the create event.
func TestHost_BackfillChecksEvents(t *testing.T) {
	ctx := context.Background()
	resident := &homeserver.Engine{
		ServerName: remote, Signer: roomstest.Key(remote), Store: storetest.Open(t), Keys: testKeys{},
		Logger: zerolog.New(zerolog.NewTestWriter(t)),
	}
	roomID, err := resident.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: bob, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	var history []*rooms.Event
	for range 12 {
		ev, err := resident.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.message", Sender: bob, Content: map[string]any{"body": "old"}})
		if err != nil {
			t.Fatal(err)
		}
		history = append(history, ev)
	}
	v, _ := rooms.LookupVersion("12")

	// Forged: a genuine event with another timestamp (so another ID)
	// under the original signature.
	obj := history[5].Object()
	forgedObj := make(map[string]any, len(obj))
	for k, val := range obj {
		forgedObj[k] = val
	}
	forgedObj["origin_server_ts"] = int64(1)
	forged, err := rooms.NewEventFromObject(v, forgedObj)
	if err != nil {
		t.Fatal(err)
	}
	// Unauthorised: eve never joined; the signature is good.
	create, err := resident.Store.CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.create"})
	if err != nil {
		t.Fatal(err)
	}
	power, err := resident.Store.CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.power_levels"})
	if err != nil {
		t.Fatal(err)
	}
	_ = create // version 12 keeps the create event out of auth_events
	eve := "@eve:" + remote
	intruder, err := rooms.BuildEvent(v, rooms.EventTemplate{Type: "m.room.message", Sender: eve, RoomID: roomID,
		Content: map[string]any{"body": "I was here"}, PrevEvents: []string{history[3].EventID()}, AuthEvents: []string{power},
		Depth: history[3].Depth() + 1, OriginServerTS: 5}, roomstest.Key(remote))
	if err != nil {
		t.Fatal(err)
	}
	tampered := false
	link := &inProcessRemote{origin: ourName, resident: resident, tamper: func(pdus [][]byte) [][]byte {
		if tampered {
			return pdus
		}
		tampered = true
		return append([][]byte{forged.JSON(), intruder.JSON()}, pdus...)
	}}
	h := newHost(t)
	h.Engine.Remote = link
	if _, _, err := h.JoinRoom(ctx, roomID, alice, []string{remote}); err != nil {
		t.Fatal(err)
	}

	got := pageIDs(t, h, roomID, 4)
	want := pageIDs(t, &homeserver.Host{Engine: resident}, roomID, 1000)
	if !slices.Equal(got, want) {
		t.Fatalf("timeline after backfill:\n got %v\nwant %v", got, want)
	}
	if !tampered {
		t.Fatal("no backfill happened")
	}
	if _, err := h.Engine.Store.Event(ctx, forged.EventID()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the forged event was stored: %v", err)
	}
	se, err := h.Engine.Store.Event(ctx, intruder.EventID())
	if err != nil || !se.Rejected {
		t.Fatalf("the unauthorised event: %+v, %v; want it kept as rejected", se, err)
	}
	// History does not move the current state.
	curHere, _ := h.Engine.Store.CurrentState(ctx, roomID)
	curThere, _ := resident.Store.CurrentState(ctx, roomID)
	if len(curHere) != len(curThere) {
		t.Fatalf("current state here %v, at the resident %v", curHere, curThere)
	}
	for k, id := range curThere {
		if curHere[k] != id {
			t.Fatalf("current state differs at %v: %s here, %s at the resident", k, curHere[k], id)
		}
	}
}

// pageIDs pages a room backwards to the end and returns the event IDs.
func pageIDs(t *testing.T, h *homeserver.Host, roomID string, limit int) []string {
	t.Helper()
	var out []string
	from := ""
	for pages := 0; pages < 100; pages++ {
		chunk, end, err := h.Messages(context.Background(), roomID, from, true, limit)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, raw := range chunk {
			out = append(out, eventID(t, raw))
		}
		if end == "" {
			return out
		}
		from = end
	}
	t.Fatal("paging does not end")
	return nil
}
