package main

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
)

// federatingEnv is the environment of a federating test instance whose
// name, port and data directory stay the same across restarts.
func federatingEnv(t *testing.T) map[string]string {
	t.Helper()
	name := "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	return map[string]string{
		"FERRY_DATA_DIR":                           t.TempDir(),
		"FERRY_SERVER_NAME":                        name,
		"FERRY_FEDERATION_LISTEN":                  name,
		"FERRY_FEDERATION_VERIFY_TLS":              "false",
		"FERRY_FEDERATION_ALLOW_PRIVATE_ADDRESSES": "true",
	}
}

// TestServe_DeliversWhatAStoppedServerMissed: D joins a room of A and
// stops; A sends 200 events while D is down, then restarts itself; D
// restarts, and once it is heard from again it ends with all 200 events
// and the same state as A.
func TestServe_DeliversWhatAStoppedServerMissed(t *testing.T) {
	ctx := context.Background()
	envA, envD := federatingEnv(t), federatingEnv(t)
	nameA, nameD := envA["FERRY_SERVER_NAME"], envD["FERRY_SERVER_NAME"]
	a, d := startServe(t, envA), startServe(t, envD)
	alice, dave := "@alice:"+nameA, "@dave:"+nameD
	roomID, err := a.inst.Engine().CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.inst.Engine().JoinRoom(ctx, roomID, dave, []string{nameA}); err != nil {
		t.Fatal(err)
	}

	d.stop()
	sent := make([]string, 0, 200)
	for i := range 200 {
		ev, err := a.inst.Engine().SendEvent(ctx, roomID, homeserver.LocalEvent{
			Type: "m.room.message", Sender: alice, Content: map[string]any{"body": fmt.Sprintf("while D is down %d", i)},
		})
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, ev.EventID())
	}
	waitHealth(t, a, nameD, "A to fail to reach D", func(h homeserver.DestinationHealth) bool { return h.Failures >= 1 })

	a.stop()
	a = startServe(t, envA)
	// The queue and the backoff are in A's store.
	waitHealth(t, a, nameD, "A's state of D after its restart", func(h homeserver.DestinationHealth) bool {
		return h.Failures >= 1 && h.Queued >= 200 && h.InFlightTxn != ""
	})

	d = startServe(t, envD)
	// D is back and heard from: A's backoff of D ends.
	if _, err := d.inst.Engine().SendEvent(ctx, roomID, homeserver.LocalEvent{
		Type: "m.room.message", Sender: dave, Content: map[string]any{"body": "back"},
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, id := range sent {
		for {
			if _, err := d.inst.Store().Event(ctx, id); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("D lacks %s", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	stateA, err := a.inst.Store().CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	stateD, err := d.inst.Store().CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(stateA, stateD) {
		t.Fatalf("current state differs:\nA %v\nD %v", stateA, stateD)
	}
	waitHealth(t, a, nameD, "A's queue of D to empty", func(h homeserver.DestinationHealth) bool {
		return h.Queued == 0 && h.Failures == 0 && h.BackoffUntil.IsZero()
	})
}

// waitHealth polls r's delivery health of dest until cond holds.
func waitHealth(t *testing.T, r *running, dest, what string, cond func(homeserver.DestinationHealth) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		all, err := r.inst.Delivery().Health(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range all {
			if h.Name == dest && cond(h) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, all)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
