package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
)

var (
	benchPDUs        = flag.Int("pdus", 5000, "BenchmarkSendIngest: PDUs per run")
	benchConcurrency = flag.Int("concurrency", 4, "BenchmarkSendIngest: transactions in flight")
	benchOrigins     = flag.Int("origins", 2, "BenchmarkSendIngest: remote servers sending")
	benchShape       = flag.String("shape", "fork", "BenchmarkSendIngest: prev_events shape (line or fork)")
)

// BenchmarkSendIngest measures a real Ferry (every check on, SQLite
// durable commits) ingesting `ferry-load send` traffic over TLS on
// loopback: -origins servers join a public room and send -pdus messages
// in transactions of 50 at -concurrency. The load generator runs in the
// same process and shares the CPUs, as it would on the same machine.
//
// It also reports two ceilings measured in the same run on every CPU
// (GOMAXPROCS goroutines for one second each), with the ingest rate as a
// fraction of each:
//
//   - the ed25519 verify ceiling: verifications of a 400-byte message;
//   - the PDU check ceiling: the checks every PDU needs before anything
//     else (parsing, the event ID's reference hash, the content hash and
//     the signature) on a message PDU like the ones sent, which is the
//     "CPU ceiling for checking a PDU (parse, hash, ed25519 verify)" of
//     issue 14.
//
// And the CPU time the process (Ferry and the generator) used per PDU
// while sending, with how busy that kept the CPUs.
//
//	go test ./cmd/ferry-load -run '^$' -bench SendIngest -benchtime 1x -pdus 5000
func BenchmarkSendIngest(b *testing.B) {
	ceiling := verifyCeiling(b, time.Second)
	checkCeiling := pduCheckCeiling(b, time.Second)
	var rate, p50, p99, cpuPerPDU, cpuShare float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		tg := startTarget(b)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		roomID, err := tg.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: "@alice:" + tg.Name, Version: "12", Preset: homeserver.PresetPublicChat})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		rep, err := sendLoad(ctx, sendConfig{
			Target: tg.Name, RoomID: roomID, Origins: *benchOrigins, PDUs: *benchPDUs, Concurrency: *benchConcurrency,
			TxnSize: 50, Shape: *benchShape, Bind: "127.0.0.1", Insecure: true,
		}, io.Discard)
		b.StopTimer()
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if rep.Accepted != *benchPDUs {
			b.Fatalf("accepted %d of %d: %v", rep.Accepted, *benchPDUs, rep.ErrorSamples)
		}
		rate += rep.PDUsPerSec
		cpuPerPDU += rep.SendCPUSeconds / float64(rep.Accepted) * 1e6
		cpuShare += rep.SendCPUSeconds / rep.SendSeconds / float64(runtime.NumCPU()) * 100
		p50 += rep.LatencyMS.P50
		p99 += rep.LatencyMS.P99
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(rate/n, "accepted-PDU/s")
	b.ReportMetric(p50/n, "txn-p50-ms")
	b.ReportMetric(p99/n, "txn-p99-ms")
	b.ReportMetric(ceiling, "ed25519-verify/s-all-CPUs")
	b.ReportMetric(rate/n/ceiling, "ratio-to-ceiling")
	b.ReportMetric(checkCeiling, "pdu-checks/s-all-CPUs")
	b.ReportMetric(rate/n/checkCeiling, "ratio-to-check-ceiling")
	// The process holds both Ferry and the load generator: how much CPU a
	// PDU cost them together, and how busy the CPUs were.
	b.ReportMetric(cpuPerPDU/n, "CPU-µs/PDU")
	b.ReportMetric(cpuShare/n, "%-of-all-CPUs")
}

// pduCheckCeiling returns how many message PDUs per second the machine
// checks on all its CPUs, measured for d: parsed under room version 12
// (which computes the event ID), content hash checked, signature
// verified.
func pduCheckCeiling(b *testing.B, d time.Duration) float64 {
	v, err := rooms.LookupVersion("12")
	if err != nil {
		b.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	key := rooms.SigningKey{ServerName: "load0.test", KeyID: "ed25519:a", Private: priv}
	id := func(c byte) string { return "$" + rooms.EncodeBase64URL(bytes.Repeat([]byte{c}, 32)) }
	ev, err := rooms.BuildEvent(v, rooms.EventTemplate{
		Type: "m.room.message", Sender: "@load0:load0.test", RoomID: "!" + rooms.EncodeBase64URL(bytes.Repeat([]byte{1}, 32)),
		Content:    map[string]any{"msgtype": "m.text", "body": "load message 1234 from load0.test"},
		PrevEvents: []string{id(2)}, AuthEvents: []string{id(3), id(4)}, Depth: 1234, OriginServerTS: time.Now().UnixMilli(),
	}, key)
	if err != nil {
		b.Fatal(err)
	}
	raw := ev.JSON()
	keys := staticKey{server: key.ServerName, keyID: key.KeyID, pub: pub}
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			n := int64(0)
			for time.Since(start) < d {
				ev, err := rooms.ParseEvent(v, raw)
				if err != nil || !ev.ContentHashValid() {
					b.Errorf("the PDU does not parse or its hash is wrong: %v", err)
					return
				}
				if err := rooms.VerifyEventSignatures(ev, keys); err != nil {
					b.Error(err)
					return
				}
				n++
			}
			total.Add(n)
		})
	}
	wg.Wait()
	return float64(total.Load()) / time.Since(start).Seconds()
}

// staticKey is a KeyLookup knowing one key.
type staticKey struct {
	server, keyID string
	pub           ed25519.PublicKey
}

func (k staticKey) VerifyKey(server, keyID string, _ int64) (ed25519.PublicKey, error) {
	if server != k.server || keyID != k.keyID {
		return nil, fmt.Errorf("unknown key %s of %s", keyID, server)
	}
	return k.pub, nil
}

// verifyCeiling returns how many ed25519 verifications per second the
// machine does on all its CPUs, measured for d.
func verifyCeiling(b *testing.B, d time.Duration) float64 {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	msg := []byte(strings.Repeat("x", 400))
	sig := ed25519.Sign(priv, msg)
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(0)
			for time.Since(start) < d {
				if !ed25519.Verify(pub, msg, sig) {
					b.Error("signature does not verify")
					return
				}
				n++
			}
			total.Add(n)
		}()
	}
	wg.Wait()
	return float64(total.Load()) / time.Since(start).Seconds()
}
