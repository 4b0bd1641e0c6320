package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
)

// BenchmarkSend_Ingest measures /send over loopback TLS into one room:
// pre-signed message PDUs, 50 per transaction, each following the
// previous one, through the whole pipeline (X-Matrix, parsing, signature
// and hash checks, three auth checks, one database transaction per PDU).
// It reports PDUs/s next to the ed25519 verify rate of one core measured
// in the same run, the ceiling of the signature check alone.
func BenchmarkSend_Ingest(b *testing.B) {
	w := newInboundWorld(b, "10")
	join := w.join(b, "bench-join", bob)
	rr := w.room

	// Pre-build the chain outside the timer.
	pdus := make([]json.RawMessage, b.N)
	prev := []string{join.EventID()}
	for i := range pdus {
		ev := rr.build(eventSpec{typ: "m.room.message", sender: bob, content: map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)}, prev: prev})
		pdus[i] = ev.JSON()
		prev = []string{ev.EventID()}
	}
	sendTimed(b, w.remote.client, "bench", pdus)
}

// ed25519VerifyRate measures how many signatures of the size of a typical
// PDU one core verifies per second.
func ed25519VerifyRate(b *testing.B, pdu []byte) float64 {
	b.Helper()
	ev, err := rooms.ParseEvent(rooms.SupportedVersions()[0], pdu)
	if err != nil {
		b.Fatal(err)
	}
	msg := ev.JSON()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	sig := ed25519.Sign(priv, msg)
	const n = 2000
	start := time.Now()
	for range n {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify failed")
		}
	}
	return n / time.Since(start).Seconds()
}

// canonicalTransaction encodes a transaction of pdus from origin as
// canonical JSON, as SendTransactionBody wants it.
func canonicalTransaction(b *testing.B, origin string, pdus []json.RawMessage) []byte {
	b.Helper()
	list := make([]any, len(pdus))
	for i, p := range pdus {
		v, err := rooms.ParseJSON(p)
		if err != nil {
			b.Fatal(err)
		}
		list[i] = v
	}
	body, err := rooms.EncodeCanonical(map[string]any{"origin": origin, "origin_server_ts": int64(1), "pdus": list})
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkSend_Ingest100Rooms measures /send over loopback TLS into 100
// rooms at once: pre-signed message PDUs, each room a chain, transactions
// of 50 PDUs that each touch 50 rooms (the PDUs taken round-robin), sent
// one after the other by one server, every check on and every
// transaction committed before its answer. It reports PDUs/s next to the
// one-core ed25519 verify rate measured in the same run.
func BenchmarkSend_Ingest100Rooms(b *testing.B) {
	const roomCount = 100
	w := newInboundWorld(b, "10")
	ctx := context.Background()
	roomsOf := []*remoteRoom{w.room}
	for len(roomsOf) < roomCount {
		roomID, err := w.ferry.engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "10", Preset: homeserver.PresetPublicChat})
		if err != nil {
			b.Fatal(err)
		}
		roomsOf = append(roomsOf, newRemoteRoom(b, w.remote, w.ferry, roomID))
	}
	prevs := make([][]string, roomCount)
	for i, rr := range roomsOf {
		join := rr.build(eventSpec{typ: "m.room.member", stateKey: rooms.StringPtr(bob), sender: bob, content: map[string]any{"membership": "join"}})
		if res := rr.send(fmt.Sprintf("join-%d", i), join); res[join.EventID()] != "" {
			b.Fatalf("join of room %d: %q", i, res[join.EventID()])
		}
		rr.apply(join)
		prevs[i] = []string{join.EventID()}
	}
	pdus := make([]json.RawMessage, b.N)
	for i := range pdus {
		r := i % roomCount
		ev := roomsOf[r].build(eventSpec{typ: "m.room.message", sender: bob, content: map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)}, prev: prevs[r]})
		pdus[i] = ev.JSON()
		prevs[r] = []string{ev.EventID()}
	}
	sendTimed(b, w.remote.client, "bench100", pdus)
}

// sendTimed sends pdus from remote.test to ferry.test in transactions of
// 50, one after the other, failing on any PDU not accepted, and reports
// PDUs/s and the one-core ed25519 verify rate measured beforehand. The
// transactions are encoded before the timer starts, as a load generator
// does: only each request's X-Matrix signature is made while timed.
func sendTimed(b *testing.B, client *Client, txnPrefix string, pdus []json.RawMessage) {
	b.Helper()
	verifyRate := ed25519VerifyRate(b, pdus[0])
	var bodies [][]byte
	for i := 0; i < len(pdus); i += MaxTransactionPDUs {
		bodies = append(bodies, canonicalTransaction(b, "remote.test", pdus[i:min(i+MaxTransactionPDUs, len(pdus))]))
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for txn, body := range bodies {
		res, err := client.SendTransactionBody(ctx, "ferry.test", fmt.Sprintf("%s-%d", txnPrefix, txn), body)
		if err != nil {
			b.Fatal(err)
		}
		for id, msg := range res {
			if msg != "" {
				b.Fatalf("event %s: %s", id, msg)
			}
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pdus/s")
	b.ReportMetric(verifyRate, "ed25519-verify/s")
}
