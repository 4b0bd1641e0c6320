package homeserver_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
)

// multiRoomSetup makes n public rooms that bob (of the remote server)
// has joined.
func multiRoomSetup(t *testing.T, e *homeserver.Engine, n int) []string {
	t.Helper()
	roomIDs := make([]string, n)
	for i := range roomIDs {
		var err error
		if roomIDs[i], err = e.CreateRoom(context.Background(), homeserver.CreateRoomRequest{Creator: alice, Version: "10", Preset: homeserver.PresetPublicChat}); err != nil {
			t.Fatal(err)
		}
		joinRemote(t, e, roomIDs[i], bob)
	}
	return roomIDs
}

// hostLogCounts counts the host log entries of each event.
func hostLogCounts(t *testing.T, e *homeserver.Engine) map[string]int {
	t.Helper()
	log, err := e.Store.ReadHostLog(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range log {
		if r.EventID != "" {
			out[r.EventID]++
		}
	}
	return out
}

// TestEngine_HeldEventsAcrossRooms: in a transaction over several rooms
// (whose question to the store of which PDUs it holds is asked once for
// all of them), events held before are answered with their stored
// outcome and not judged or logged again; new ones are judged.
func TestEngine_HeldEventsAcrossRooms(t *testing.T) {
	e := newEngine(t)
	roomIDs := multiRoomSetup(t, e, 3)
	var held, fresh []*rooms.Event
	for _, roomID := range roomIDs {
		held = append(held, remoteEvent(t, e, roomID, "m.room.message", nil, bob, map[string]any{"msgtype": "m.text", "body": "first"}))
	}
	// An event bob may not send: rejected, and remembered as such.
	denied := remoteEvent(t, e, roomIDs[0], "m.room.power_levels", rooms.StringPtr(""), bob, map[string]any{"users": map[string]any{bob: 100}})
	verdicts := receive(t, e, remote, append(held, denied)...)
	if !errors.Is(verdicts[denied.EventID()], homeserver.ErrRejected) {
		t.Fatalf("power levels from bob: %v, want rejected", verdicts[denied.EventID()])
	}
	for _, ev := range held {
		if err := verdicts[ev.EventID()]; err != nil {
			t.Fatalf("%s: %v", ev.EventID(), err)
		}
	}
	for _, roomID := range roomIDs {
		fresh = append(fresh, remoteEvent(t, e, roomID, "m.room.message", nil, bob, map[string]any{"msgtype": "m.text", "body": "second"}))
	}

	// The same rooms again: the held events, the rejected one, new ones.
	all := append(append(append([]*rooms.Event{}, held...), denied), fresh...)
	verdicts = receive(t, e, remote, all...)
	if len(verdicts) != len(all) {
		t.Fatalf("%d verdicts for %d PDUs", len(verdicts), len(all))
	}
	if !errors.Is(verdicts[denied.EventID()], homeserver.ErrRejected) {
		t.Fatalf("held rejected event: %v, want its rejection again", verdicts[denied.EventID()])
	}
	for _, ev := range append(append([]*rooms.Event{}, held...), fresh...) {
		if err := verdicts[ev.EventID()]; err != nil {
			t.Fatalf("%s: %v", ev.EventID(), err)
		}
	}
	counts := hostLogCounts(t, e)
	for _, ev := range append(append([]*rooms.Event{}, held...), fresh...) {
		if counts[ev.EventID()] != 1 {
			t.Fatalf("%s is in the host log %d times, want once", ev.EventID(), counts[ev.EventID()])
		}
	}
	if counts[denied.EventID()] != 0 {
		t.Fatalf("the rejected event reached the host")
	}
}

// TestEngine_SamePDUsConcurrently sends the same transaction over several
// rooms twice at once, many times: one of the two judges each event, the
// other finds it held (a room written between the shared question and
// its lock asks again), and every event reaches the host once.
func TestEngine_SamePDUsConcurrently(t *testing.T) {
	e := newEngine(t)
	roomIDs := multiRoomSetup(t, e, 4)
	var sent []*rooms.Event
	for round := range 8 {
		var evs []*rooms.Event
		for _, roomID := range roomIDs {
			evs = append(evs, remoteEvent(t, e, roomID, "m.room.message", nil, bob, map[string]any{"msgtype": "m.text", "body": fmt.Sprint(round)}))
		}
		var wg sync.WaitGroup
		results := make([]map[string]error, 2)
		for k := range results {
			wg.Go(func() { results[k] = receive(t, e, remote, evs...) })
		}
		wg.Wait()
		for _, verdicts := range results {
			for _, ev := range evs {
				if err := verdicts[ev.EventID()]; err != nil {
					t.Fatalf("round %d, %s: %v", round, ev.EventID(), err)
				}
			}
		}
		sent = append(sent, evs...)
	}
	counts := hostLogCounts(t, e)
	for _, ev := range sent {
		if counts[ev.EventID()] != 1 {
			t.Fatalf("%s is in the host log %d times, want once", ev.EventID(), counts[ev.EventID()])
		}
	}
}
