package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/homeserver"
)

// TestSend_AllAcceptedByFerry: ferry-load joins a public room of a real
// Ferry as remote servers and sends its messages in transactions; every
// PDU is accepted and stored by the target, for each prev_events shape,
// in both room versions.
func TestSend_AllAcceptedByFerry(t *testing.T) {
	t.Parallel()
	cases := []struct {
		version, shape       string
		origins, concurrency int
	}{
		{"12", "line", 1, 1},
		{"12", "fork", 2, 4},
		{"10", "line", 2, 4}, // two transactions of a chain in flight: the target may fill gaps from us
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("v%s_%s_%dservers_%dconc", c.version, c.shape, c.origins, c.concurrency), func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t)
			ctx := testContext(t)
			roomID, err := tg.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{
				Creator: "@alice:" + tg.Name, Version: c.version, Preset: homeserver.PresetPublicChat,
			})
			if err != nil {
				t.Fatal(err)
			}
			var log bytes.Buffer
			rep, err := sendLoad(ctx, sendConfig{
				Target: tg.Name, RoomID: roomID, Origins: c.origins, PDUs: 200, Concurrency: c.concurrency,
				TxnSize: 50, Shape: c.shape, Bind: "127.0.0.1", Insecure: true,
			}, &log)
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			if rep.Accepted != 200 || rep.PDUErrors != 0 || rep.TxnFailed != 0 {
				t.Fatalf("accepted %d of 200, %d PDU errors, %d failed transactions: %v", rep.Accepted, rep.PDUErrors, rep.TxnFailed, rep.ErrorSamples)
			}
			if rep.RoomVersion != c.version {
				t.Errorf("report says version %s", rep.RoomVersion)
			}
			if want := c.origins * (200 / c.origins / 50); c.shape == "line" && rep.Transactions != want {
				t.Errorf("%d transactions, want %d", rep.Transactions, want)
			}
			if len(rep.EventIDs) != 200 {
				t.Fatalf("%d event IDs reported", len(rep.EventIDs))
			}
			for _, id := range rep.EventIDs {
				se, err := tg.DB.Event(ctx, id)
				if err != nil {
					t.Fatalf("target lacks %s: %v", id, err)
				}
				if se.Rejected || se.SoftFailed || se.Outlier || se.Event.RoomID() != roomID {
					t.Fatalf("target holds %s as rejected=%v soft-failed=%v outlier=%v", id, se.Rejected, se.SoftFailed, se.Outlier)
				}
			}
			members, err := tg.DB.Members(ctx, roomID, "join")
			if err != nil {
				t.Fatal(err)
			}
			if len(members) != 1+c.origins {
				t.Errorf("the target's room has members %v, want alice and %d load users", members, c.origins)
			}
			if rep.LatencyMS.Max <= 0 || rep.LatencyMS.P50 > rep.LatencyMS.Max {
				t.Errorf("latency summary %+v", rep.LatencyMS)
			}
		})
	}
}

// TestSend_CommandLine runs the send command as a user would, with JSON
// output, and reads the report.
func TestSend_CommandLine(t *testing.T) {
	t.Parallel()
	tg := startTarget(t)
	ctx := testContext(t)
	roomID, err := tg.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: "@alice:" + tg.Name, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"send", "--target", tg.Name, "--room", roomID, "--pdus", "60", "--txn-size", "25", "--concurrency", "2", "--insecure", "--json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
	}
	var rep map[string]any
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if rep["accepted"] != float64(60) || rep["transactions"] != float64(3) || rep["room_id"] != roomID {
		t.Fatalf("report %s", out.String())
	}
	for _, k := range []string{"accepted_pdus_per_second", "latency_ms", "pdu_errors"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("report has no %s", k)
		}
	}
}

// TestSend_Refusals: a room the target does not have fails at the join
// with the target's error; bad flags are refused before any network use.
func TestSend_Refusals(t *testing.T) {
	t.Parallel()
	tg := startTarget(t)
	ctx := testContext(t)
	_, err := sendLoad(ctx, sendConfig{Target: tg.Name, RoomID: "!nosuchroom:" + tg.Name, Origins: 1, PDUs: 10, Concurrency: 1, TxnSize: 50, Shape: "line", Bind: "127.0.0.1", Insecure: true}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "make_join") || !strings.Contains(err.Error(), "404") {
		t.Fatalf("join of an unknown room: %v", err)
	}
	for _, args := range [][]string{
		{"send"},
		{"send", "--target", tg.Name, "--room", "!r:x", "--txn-size", "51"},
		{"send", "--target", tg.Name, "--room", "!r:x", "--shape", "star"},
		{"send", "--target", tg.Name, "--room", "!r:x", "--servers", "3", "--concurrency", "2"},
		{"send", "--target", tg.Name, "--create-room"},
	} {
		var errOut bytes.Buffer
		if code := run(ctx, args, io.Discard, &errOut); code != 1 || errOut.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut.String())
		}
	}
}

// TestSend_CreateRoomThroughHostAPI: with --create-room, the room is made
// on the target through Ferry's host API, then joined and filled over
// federation.
func TestSend_CreateRoomThroughHostAPI(t *testing.T) {
	t.Parallel()
	tg := startTarget(t)
	base, token := tg.hostAPI(t)
	ctx := testContext(t)
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"send", "--target", tg.Name, "--insecure", "--json", "--pdus", "50",
		"--host-api", base, "--host-token", token, "--create-room", "--room-version", "10"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
	}
	var rep struct {
		RoomID      string `json:"room_id"`
		RoomVersion string `json:"room_version"`
		Accepted    int    `json:"accepted"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Accepted != 50 || rep.RoomVersion != "10" {
		t.Fatalf("report %s", out.String())
	}
	members, err := tg.DB.Members(ctx, rep.RoomID, "join")
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 2 || !strings.Contains(strings.Join(members, " "), "@ferry-load:"+tg.Name) {
		t.Fatalf("members %v, want the creator and the load user", members)
	}
	// A wrong token is the host API's refusal, reported before any join.
	errOut.Reset()
	if code := run(ctx, []string{"send", "--target", tg.Name, "--insecure", "--host-api", base, "--host-token", "wrong", "--create-room"}, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "401") {
		t.Errorf("wrong token: exit %d, %s", code, errOut.String())
	}
}
