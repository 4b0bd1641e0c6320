package homeserver_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
	"github.com/ferry-matrix/ferry/store/storetest"
)

// fuzzRoom is an engine holding a public room that bob of remote.test
// has joined; fuzz inputs arrive as bob's server.
func fuzzRoom(f *testing.F, version string) (*homeserver.Engine, string) {
	ctx := context.Background()
	e := &homeserver.Engine{
		ServerName: ourName, Signer: roomstest.Key(ourName), Store: storetest.Open(f), Keys: testKeys{},
		Logger: zerolog.Nop(),
	}
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: version, Preset: homeserver.PresetPublicChat})
	if err != nil {
		f.Fatal(err)
	}
	joinRemote(f, e, roomID, bob)
	return e, roomID
}

// checkNoInternalErrors fails when the engine blamed itself for input
// from the network: bad input must be dropped or rejected, never a fault
// of ours that makes the sender retry forever.
func checkNoInternalErrors(t *testing.T, verdicts map[string]error) {
	t.Helper()
	for id, err := range verdicts {
		var internal *homeserver.InternalError
		if errors.As(err, &internal) {
			t.Fatalf("event %s: internal error on network input: %v", id, internal.Err)
		}
	}
}

// FuzzReceivePDUs mutates the bytes of valid signed PDUs (message, state,
// membership, redaction) and hands them to the inbound pipeline: it must
// not panic and must not report a fault of its own.
func FuzzReceivePDUs(f *testing.F) {
	e, roomID := fuzzRoom(f, "12")
	seed := func(typ string, stateKey *string, content map[string]any) {
		f.Add(remoteEvent(f, e, roomID, typ, stateKey, bob, content).JSON())
	}
	seed("m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "hello"})
	seed("m.room.topic", rooms.StringPtr(""), map[string]any{"topic": "fuzz"})
	seed("m.room.member", rooms.StringPtr(bob), map[string]any{"membership": "leave"})
	seed("m.room.power_levels", rooms.StringPtr(""), map[string]any{"users": map[string]any{bob: 100}})
	seed("m.room.redaction", nil, map[string]any{"redacts": "$nothing"})
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"room_id":"` + roomID + `","type":"m.room.message"}`))
	f.Fuzz(func(t *testing.T, pdu []byte) {
		checkNoInternalErrors(t, e.ReceivePDUs(context.Background(), remote, [][]byte{pdu}))
	})
}

// FuzzReceiveSignedEvents builds correctly signed events of bob with
// fuzzed type, state key and content, so the input gets past the
// signature check into the auth rules and state handling.
func FuzzReceiveSignedEvents(f *testing.F) {
	e, roomID := fuzzRoom(f, "10")
	f.Add("m.room.message", false, "", `{"msgtype":"m.text","body":"hi"}`)
	f.Add("m.room.member", true, bob, `{"membership":"leave"}`)
	f.Add("m.room.member", true, "@alice:hs.test", `{"membership":"ban"}`)
	f.Add("m.room.power_levels", true, "", `{"users":{"@bob:remote.test":"100"}}`)
	f.Add("m.room.join_rules", true, "", `{"join_rule":"knock_restricted","allow":[{"type":"m.room_membership"}]}`)
	f.Add("m.room.server_acl", true, "", `{"allow":["*"],"deny":["remote.test"]}`)
	f.Add("m.room.redaction", false, "", `{"redacts":"$x"}`)
	f.Add("m.room.create", true, "", `{"creator":"@bob:remote.test"}`)
	f.Fuzz(func(t *testing.T, typ string, isState bool, stateKey, content string) {
		parsed, err := rooms.ParseJSON([]byte(content))
		if err != nil {
			return
		}
		obj, ok := parsed.(map[string]any)
		if !ok {
			return
		}
		var sk *string
		if isState {
			sk = &stateKey
		}
		ev, err := buildRemote(e, roomID, typ, sk, bob, obj)
		if err != nil {
			// The builder refused it (an oversized type, say): nothing to send.
			return
		}
		checkNoInternalErrors(t, receive(t, e, remote, ev))
	})
}

// TestEngine_DuplicatePDUsInOneTransaction: a PDU repeated in one
// transaction, and one already held, are judged once and stored once.
func TestEngine_DuplicatePDUsInOneTransaction(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	roomID, err := e.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	join := joinRemote(t, e, roomID, bob)
	msg := remoteEvent(t, e, roomID, "m.room.message", nil, bob, map[string]any{"msgtype": "m.text", "body": "once"})
	verdicts := receive(t, e, remote, msg, join, msg)
	if len(verdicts) != 2 || verdicts[msg.EventID()] != nil || verdicts[join.EventID()] != nil {
		t.Fatalf("verdicts %v, want both accepted", verdicts)
	}
	log, err := e.Store.ReadHostLog(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, r := range log {
		if r.EventID == msg.EventID() {
			seen++
		}
	}
	if seen != 1 {
		t.Fatalf("the message is in the host log %d times, want once", seen)
	}
}
