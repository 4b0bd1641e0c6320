package fedtest

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/ferry-matrix/ferry/homeserver"
)

// pageAll pages a room's timeline backwards through a host until the end
// and returns the event IDs, newest first.
func pageAll(t *testing.T, h *homeserver.Host, roomID string, limit int) []string {
	t.Helper()
	ctx := testContext(t)
	var out []string
	from := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		chunk, end, err := h.Messages(ctx, roomID, from, true, limit)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, raw := range chunk {
			var ev struct {
				EventID string `json:"event_id"`
			}
			if err := json.Unmarshal(raw, &ev); err != nil || ev.EventID == "" {
				t.Fatalf("event without event_id: %s", raw)
			}
			out = append(out, ev.EventID)
		}
		if end == "" {
			return out
		}
		from = end
	}
}

// TestHost_MessagesBackfill: B joins A's room, which has history; paging
// B's timeline backwards reaches its oldest event (B's join) and goes on
// by backfilling from A, down to the create event. B ends with the same
// timeline as A, history state and a redaction included, and the same
// current state.
func TestHost_MessagesBackfill(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			nodes := startNodes(t, 2)
			a, b := nodes[0], nodes[1]
			ctx := testContext(t)
			alice, bob := a.User("alice"), b.User("bob")
			roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: version, Preset: homeserver.PresetPublicChat})
			if err != nil {
				t.Fatal(err)
			}
			var redacted string
			for i := range 40 {
				id := a.Say(t, roomID, alice, "history")
				switch i {
				case 10:
					a.SetState(t, roomID, alice, "m.room.topic", "", map[string]any{"topic": "old times"})
				case 20:
					redacted = id
					if _, err := a.Engine.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.redaction", Sender: alice, Redacts: id, Content: map[string]any{}}); err != nil {
						t.Fatal(err)
					}
				}
			}
			registerUsers(t, b, bob)
			if _, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name}); err != nil {
				t.Fatal(err)
			}
			hostA := &homeserver.Host{Engine: a.Engine}
			hostB := &homeserver.Host{Engine: b.Engine}
			want := pageAll(t, hostA, roomID, 1000)
			got := pageAll(t, hostB, roomID, 10)
			if !slices.Equal(got, want) {
				t.Fatalf("B's timeline after backfill has %d events, A's %d:\nB %v\nA %v", len(got), len(want), got, want)
			}
			oldest, err := b.DB.Event(ctx, got[len(got)-1])
			if err != nil || oldest.Event.Type() != "m.room.create" || oldest.Outlier {
				t.Fatalf("B's oldest timeline event: %+v, %v", oldest, err)
			}
			if se, err := b.DB.Event(ctx, redacted); err != nil || !se.Redacted {
				t.Fatalf("the backfilled redaction was not applied on B: %+v, %v", se, err)
			}
			// History is not news: the host log of B has none of it.
			logB, err := b.DB.ReadHostLog(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range logB {
				if r.EventID != "" && r.EventID != got[0] {
					t.Fatalf("B's host log holds the backfilled event %s", r.EventID)
				}
			}
			requireSameState(t, roomID, a, b)
			// B still talks in the room: its extremities were not
			// disturbed by the history.
			hi := b.Say(t, roomID, bob, "caught up")
			b.Flush(t)
			a.WaitEvent(t, hi)
			requireSameState(t, roomID, a, b)
		})
	}
}

// TestHost_MessagesBackfillUnavailable: when the only other server in the
// room is down, the events held are returned, and the page that needs
// history from it fails as Unavailable (502).
func TestHost_MessagesBackfillUnavailable(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx := testContext(t)
	alice, bob := a.User("alice"), b.User("bob")
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		a.Say(t, roomID, alice, "history")
	}
	registerUsers(t, b, bob)
	join, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name})
	if err != nil {
		t.Fatal(err)
	}
	a.stop(false)
	hostB := &homeserver.Host{Engine: b.Engine}
	chunk, end, err := hostB.Messages(ctx, roomID, "", true, 10)
	if err != nil || len(chunk) != 1 || end == "" {
		t.Fatalf("first page: %d events, end %q, %v; want the join and a token", len(chunk), end, err)
	}
	var ev struct {
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal(chunk[0], &ev); err != nil || ev.EventID != join.EventID() {
		t.Fatalf("first page holds %s, want the join %s", chunk[0], join.EventID())
	}
	_, _, err = hostB.Messages(ctx, roomID, end, true, 10)
	var he *homeserver.Error
	if !errors.As(err, &he) || !he.Unavailable() {
		t.Fatalf("second page: %v, want Unavailable", err)
	}
}
