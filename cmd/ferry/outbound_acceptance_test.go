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

// TestServe_DeliversWhatAStoppedServerMissed: B, C and D join a room of
// A (four `ferry serve` servers); D stops; A sends 200 events while D is
// down, then restarts itself; D restarts, and once it is heard from again
// it ends with all 200 events and the same state as A, B and C, which had
// them all along.
//
// D stops right after its join, before B and C may have seen it: they
// check D's signature on its join with D's key fetched through A, their
// trusted key server (federation.trusted_key_servers), as deployments
// have one. Without one, a server cannot check the join of a server that
// is down, and drops it and every event after it until it is back.
func TestServe_DeliversWhatAStoppedServerMissed(t *testing.T) {
	ctx := context.Background()
	envA, envB, envC, envD := federatingEnv(t), federatingEnv(t), federatingEnv(t), federatingEnv(t)
	nameA, nameD := envA["FERRY_SERVER_NAME"], envD["FERRY_SERVER_NAME"]
	for _, env := range []map[string]string{envB, envC, envD} {
		env["FERRY_FEDERATION_TRUSTED_KEY_SERVERS"] = nameA
	}
	a, b, c, d := startServe(t, envA), startServe(t, envB), startServe(t, envC), startServe(t, envD)
	alice, dave := "@alice:"+nameA, "@dave:"+nameD
	roomID, err := a.inst.Engine().CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	for _, joiner := range []struct {
		r    *running
		user string
	}{{b, "@bob:" + envB["FERRY_SERVER_NAME"]}, {c, "@carol:" + envC["FERRY_SERVER_NAME"]}, {d, dave}} {
		if _, err := joiner.r.inst.Engine().JoinRoom(ctx, roomID, joiner.user, []string{nameA}); err != nil {
			t.Fatal(err)
		}
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
	for name, r := range map[string]*running{"B": b, "C": c, "D": d} {
		for _, id := range sent {
			for {
				if _, err := r.inst.Store().Event(ctx, id); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s lacks %s", name, id)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	stateA, err := a.inst.Store().CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*running{"B": b, "C": c, "D": d} {
		state, err := r.inst.Store().CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(stateA, state) {
			t.Fatalf("current state differs:\nA %v\n%s %v", stateA, name, state)
		}
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
