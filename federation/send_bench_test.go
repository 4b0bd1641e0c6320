package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"runtime"
	"syscall"
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
	sendTimed(b, ingestStream{client: w.remote.client, origin: "remote.test", txnPrefix: "bench", pdus: pdus})
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
//
// One server sending one transaction at a time is the worst case: the
// spec has a server's transactions processed in order, so the receiver
// cannot overlap one with the next and waits for each commit in turn.
// BenchmarkSend_Ingest100RoomsFourServers is the same load from four
// servers at once.
func BenchmarkSend_Ingest100Rooms(b *testing.B) {
	benchmarkIngestRooms(b, 100, 1)
}

// BenchmarkSend_Ingest100RoomsFourServers is BenchmarkSend_Ingest100Rooms
// with the load coming from four remote servers at once, as it does when
// a server is in many rooms: each server has joined 25 of the rooms and
// sends the chains of those, one transaction at a time, the four
// concurrently. b.N PDUs are sent in all.
func BenchmarkSend_Ingest100RoomsFourServers(b *testing.B) {
	benchmarkIngestRooms(b, 100, 4)
}

// BenchmarkSend_Ingest100RoomsTenServers is the same from ten servers,
// each with 10 of the rooms (a transaction of 50 PDUs then holds 5 of
// each of its rooms).
func BenchmarkSend_Ingest100RoomsTenServers(b *testing.B) {
	benchmarkIngestRooms(b, 100, 10)
}

// benchmarkIngestRooms sends b.N message PDUs into roomCount rooms from
// servers remote servers, each with its own share of the rooms.
func benchmarkIngestRooms(b *testing.B, roomCount, servers int) {
	ctx := context.Background()
	pki := newTestPKI(b)
	ferry := startFerry(b, pki, "ferry.test")
	var streams []ingestStream
	var roomsOf []*remoteRoom
	for k := range servers {
		name := "remote.test"
		if k > 0 {
			name = fmt.Sprintf("remote%d.test", k+1)
		}
		node := newRoomNode(b, pki, name, byte(42+k))
		node.start(b, pki, newScriptedRooms())
		linkNodes(ferry.roomNode, node)
		user := "@bob:" + name
		var own []*remoteRoom
		for range roomCount / servers {
			roomID, err := ferry.engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "10", Preset: homeserver.PresetPublicChat})
			if err != nil {
				b.Fatal(err)
			}
			rr := newRemoteRoom(b, node, ferry, roomID)
			join := rr.build(eventSpec{typ: "m.room.member", stateKey: rooms.StringPtr(user), sender: user, content: map[string]any{"membership": "join"}})
			if res := rr.send(fmt.Sprintf("join-%d", len(roomsOf)), join); res[join.EventID()] != "" {
				b.Fatalf("join of room %d: %q", len(roomsOf), res[join.EventID()])
			}
			rr.apply(join)
			own = append(own, rr)
			roomsOf = append(roomsOf, rr)
		}
		streams = append(streams, ingestStream{client: node.client, origin: name, txnPrefix: fmt.Sprintf("bench-%d", k), user: user, rooms: own})
	}
	// The PDUs go round-robin over the rooms: server k gets PDUs
	// k, k+servers, ... of the whole sequence.
	prevs := make(map[*remoteRoom][]string, len(roomsOf))
	for _, rr := range roomsOf {
		prevs[rr] = rr.extremities()
	}
	for i := range b.N {
		st := &streams[i%servers]
		rr := st.rooms[(i/servers)%len(st.rooms)]
		ev := rr.build(eventSpec{typ: "m.room.message", sender: st.user, content: map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)}, prev: prevs[rr]})
		st.pdus = append(st.pdus, ev.JSON())
		prevs[rr] = []string{ev.EventID()}
	}
	sendTimed(b, streams...)
}

// ingestStream is one remote server's share of an ingest benchmark.
type ingestStream struct {
	client            *Client
	origin, txnPrefix string
	user              string
	rooms             []*remoteRoom
	pdus              []json.RawMessage
}

// sendTimed sends each stream's PDUs from its server to ferry.test in
// transactions of 50, one after the other, the streams concurrently,
// failing on any PDU not accepted, and reports PDUs/s, the one-core
// ed25519 verify rate measured beforehand and the ratio of the two, and
// the CPU time used per PDU. The transactions are encoded
// before the timer starts, as a load generator does: only each request's
// X-Matrix signature is made while timed.
func sendTimed(b *testing.B, streams ...ingestStream) {
	b.Helper()
	verifyRate := ed25519VerifyRate(b, streams[0].pdus[0])
	bodies := make([][][]byte, len(streams))
	total := 0
	for k, st := range streams {
		for i := 0; i < len(st.pdus); i += MaxTransactionPDUs {
			bodies[k] = append(bodies[k], canonicalTransaction(b, st.origin, st.pdus[i:min(i+MaxTransactionPDUs, len(st.pdus))]))
		}
		total += len(st.pdus)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	cpuStart := processCPUSeconds(b)
	errs := make(chan error, len(streams))
	for k, st := range streams {
		go func() {
			for txn, body := range bodies[k] {
				res, err := st.client.SendTransactionBody(ctx, "ferry.test", fmt.Sprintf("%s-%d", st.txnPrefix, txn), body)
				if err != nil {
					errs <- err
					return
				}
				for id, msg := range res {
					if msg != "" {
						errs <- fmt.Errorf("event %s: %s", id, msg)
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range streams {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	cpu := processCPUSeconds(b) - cpuStart
	b.StopTimer()
	rate := float64(total) / elapsed.Seconds()
	b.ReportMetric(rate, "pdus/s")
	b.ReportMetric(verifyRate, "ed25519-verify/s")
	b.ReportMetric(rate/verifyRate, "ratio-to-one-core-verify")
	// The process holds Ferry and its senders: what a PDU cost them in
	// CPU time, and how busy that kept the CPUs.
	b.ReportMetric(cpu/float64(total)*1e6, "CPU-µs/PDU")
	b.ReportMetric(cpu/elapsed.Seconds()/float64(runtime.NumCPU())*100, "%-of-all-CPUs")
}

// processCPUSeconds returns the user plus system CPU time the process has
// used.
func processCPUSeconds(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
