package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
)

// BenchmarkPartialJoinBigRoom times a real Ferry's partial-state
// ("faster") join of a synthetic room of -members members served by
// `ferry-load bigroom` in a subprocess: until usable (make_join,
// send_join with omit_members=true, verification and persistence of the
// partial state, then one message of the joined user sent: authorised,
// persisted and queued for the room's servers) and until resynced (the full state fetched with
// /state, verified, persisted and installed in the background), with the
// slowest of the messages sent every 100 ms during the resync. It
// reports the test process's peak RSS over the whole join and resync.
// Run it by hand, once:
//
//	go test ./cmd/ferry-load -run '^$' -bench PartialJoinBigRoom -benchtime 1x -members 100000
func BenchmarkPartialJoinBigRoom(b *testing.B) {
	ready := startBigRoomResident(b, "")

	var peak int64
	var usable, resynced, usableCPU, resyncCPU, slowest float64
	sent := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		tg := startTarget(b)
		tg.Engine.PartialStateJoins = true
		background, stop := context.WithCancel(context.Background())
		b.Cleanup(func() { stop(); tg.Engine.WaitPartialResyncs() })
		if err := tg.Engine.StartPartialResyncs(background); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			b.Logf("cannot reset the peak RSS (%v): it covers the whole run", err)
		}
		cpuBefore := selfCPU(b)
		user := fmt.Sprintf("@joiner%d:%s", i, tg.Name)
		b.StartTimer()
		start := time.Now()
		_, err := tg.Engine.JoinRoom(ctx, ready.RoomID, user, []string{ready.Servers[0]})
		if err == nil {
			_, err = tg.Engine.SendEvent(ctx, ready.RoomID, homeserver.LocalEvent{
				Type: "m.room.message", Sender: user, Content: map[string]any{"msgtype": "m.text", "body": "usable"},
			})
		}
		usable += time.Since(start).Seconds()
		usableCPU += selfCPU(b) - cpuBefore
		if err != nil {
			b.Fatal(err)
		}
		if !tg.Engine.PartialState(ctx, ready.RoomID) {
			b.Log("the room was resynced before the first message was sent")
		}
		// The room stays usable during the resync: a message every 100
		// ms, each timed.
		for n := 1; tg.Engine.PartialState(ctx, ready.RoomID); n++ {
			sendStart := time.Now()
			if _, err := tg.Engine.SendEvent(ctx, ready.RoomID, homeserver.LocalEvent{
				Type: "m.room.message", Sender: user, Content: map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("during the resync %d", n)},
			}); err != nil {
				b.Fatal(err)
			}
			slowest = max(slowest, time.Since(sendStart).Seconds())
			sent++
			time.Sleep(100 * time.Millisecond)
		}
		resynced += time.Since(start).Seconds()
		b.StopTimer()
		resyncCPU += selfCPU(b) - cpuBefore
		cancel()
		peak = max(peak, joinedPeak(b, tg, ready))
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(usable/float64(b.N), "s-usable")
	b.ReportMetric(resynced/float64(b.N), "s-resynced")
	b.ReportMetric(usableCPU/float64(b.N), "CPU-s-usable")
	b.ReportMetric(resyncCPU/float64(b.N), "CPU-s-resynced")
	b.ReportMetric(slowest, "s-slowest-send-during-resync")
	b.ReportMetric(float64(sent)/float64(b.N), "sends-during-resync")
	b.ReportMetric(float64(peak)/1e6, "peak-RSS-MB")
	b.ReportMetric(float64(ready.Members), "members")
}
