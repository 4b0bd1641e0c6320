package store_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

// Benchmarks run only under -bench; the figures they report are in the
// issue's terms (events/s, seconds, bytes per state event, peak RSS, ms).
//
//	go test ./store -run '^$' -bench . -benchtime 1x

// BenchmarkPersistMessages inserts 10,000 message events into one room,
// in batches of 1, 100 and 1000 events per transaction (synchronous=FULL),
// each queued for one destination and logged for the host.
func BenchmarkPersistMessages(b *testing.B) {
	for _, batch := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				db := storetest.Open(b, store.Options{Synchronous: "FULL"})
				r := newTestRoom(b, "msgs")
				persist(b, db, linear(r.genesis()...))
				evs := make([]*rooms.Event, 10_000)
				for i := range evs {
					evs[i] = r.message("message body of a typical length, " + strconv.Itoa(i))
				}
				b.StartTimer()
				start, cpuStart := time.Now(), cpuSeconds(b)
				for i := 0; i < len(evs); i += batch {
					bt := linear(evs[i:min(i+batch, len(evs))]...)
					for k := range bt.Events {
						bt.Events[k].Destinations = []string{"b.test"}
						bt.HostLog = append(bt.HostLog, store.HostLogEntry{Kind: store.HostEvent, RoomID: r.id, EventID: bt.Events[k].Event.EventID()})
					}
					if _, err := db.PersistEvents(ctx, bt); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(evs))/time.Since(start).Seconds(), "events/s")
				b.ReportMetric(float64(len(evs))/(cpuSeconds(b)-cpuStart), "events/cpu-s")
			}
		})
	}
}

// bigRoom is a room with many members, built once (signing 100k events
// takes a while) and shared by the benchmarks.
type bigRoom struct {
	r       *testRoom
	genesis []*rooms.Event
	members []*rooms.Event
}

var (
	bigRoomOnce sync.Once
	bigRoomVal  *bigRoom
)

func getBigRoom(tb testing.TB) *bigRoom {
	bigRoomOnce.Do(func() {
		r := newTestRoom(tb, "big")
		br := &bigRoom{r: r, genesis: r.genesis()}
		for i := range 100_000 {
			br.members = append(br.members, r.join(fmt.Sprintf("@user%06d:s%d.test", i, i%500)))
		}
		bigRoomVal = br
	})
	return bigRoomVal
}

// joinBatch is the send_join case: n member events and the genesis events
// as outliers, and our join with the whole state before it, in one batch.
func (br *bigRoom) joinBatch(tb testing.TB, n int) (store.Batch, *rooms.Event) {
	members := br.members[:n]
	state := store.StateMap{}
	var b store.Batch
	for _, ev := range append(append([]*rooms.Event{}, br.genesis...), members...) {
		b.Events = append(b.Events, store.NewEvent{Event: ev, Outcome: store.Outlier})
		sk, _ := ev.StateKey()
		state[store.StateKey{Type: ev.Type(), StateKey: sk}] = ev.EventID()
	}
	r := *br.r
	r.state = state
	r.depth = members[n-1].Depth()
	join := r.build("m.room.member", rooms.StringPtr("@us:a.test"), "@us:a.test", map[string]any{"membership": "join"}, []string{members[n-1].EventID()})
	b.Events = append(b.Events, store.NewEvent{Event: join, Outcome: store.Accepted, StateBefore: &store.StateRef{Changes: state}})
	b.CurrentState = &store.StateRef{AfterEvent: join.EventID()}
	b.RoomStatus = store.RoomJoined
	return b, join
}

func procStatus(tb testing.TB, field string) float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte(field+":")); ok {
			kb, err := strconv.ParseFloat(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb / 1024
		}
	}
	tb.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// cpuSeconds is the process's user+system CPU time: on a shared machine
// it shows the work done where wall time also shows waiting for a core.
func cpuSeconds(tb testing.TB) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func dbFileBytes(tb testing.TB, path string) int64 {
	var n int64
	for _, p := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// BenchmarkBulkJoinState persists the state of a 10,000- and a
// 100,000-member room as one send_join batch and reports the time, the
// database size per state event and the peak RSS while inserting.
func BenchmarkBulkJoinState(b *testing.B) {
	br := getBigRoom(b)
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				batch, _ := br.joinBatch(b, n)
				dir := b.TempDir()
				path := filepath.Join(dir, "ferry.db")
				db, err := store.Open(ctx, path, store.Options{})
				if err != nil {
					b.Fatal(err)
				}
				rssBefore := procStatus(b, "VmRSS")
				_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // reset the peak (VmHWM)
				b.StartTimer()
				start, cpuStart := time.Now(), cpuSeconds(b)
				if _, err := db.PersistEvents(ctx, batch); err != nil {
					b.Fatal(err)
				}
				secs := time.Since(start).Seconds()
				b.ReportMetric(cpuSeconds(b)-cpuStart, "cpu-s/insert")
				b.StopTimer()
				peak := procStatus(b, "VmHWM")
				db.Close()
				size := dbFileBytes(b, path)
				stateEvents := float64(len(batch.Events))
				b.ReportMetric(secs, "s/insert")
				b.ReportMetric(stateEvents/secs, "events/s")
				b.ReportMetric(float64(size)/stateEvents, "B/state-event")
				b.ReportMetric(float64(size)/(1<<20), "MB-on-disk")
				b.ReportMetric(peak, "MB-peak-RSS")
				b.ReportMetric(peak-rssBefore, "MB-RSS-growth")
				b.StartTimer()
			}
		})
	}
}

// BenchmarkStateRead100k reads the full state at an event of a
// 100,000-member room after 1,000 later membership changes, for several
// FullSnapshotRatio values (the knob that trades write amplification for
// the size of the delta read on top of the full snapshot).
func BenchmarkStateRead100k(b *testing.B) {
	br := getBigRoom(b)
	for _, ratio := range []float64{0.005, 0.05, 0.25} {
		b.Run(fmt.Sprintf("ratio=%g", ratio), func(b *testing.B) {
			ctx := context.Background()
			db := storetest.Open(b, store.Options{FullSnapshotRatio: ratio})
			batch, join := br.joinBatch(b, 100_000)
			persist(b, db, batch)
			before, err := db.Stats(ctx)
			if err != nil {
				b.Fatal(err)
			}
			r := *br.r
			r.state = maps(batch.Events[len(batch.Events)-1].StateBefore.Changes)
			r.advance(join)
			var last *rooms.Event
			writeStart := time.Now()
			for i := range 1000 {
				user := fmt.Sprintf("@user%06d:s%d.test", i*7, (i*7)%500)
				membership := "leave"
				if i%2 == 1 {
					membership = "join"
					user = fmt.Sprintf("@new%06d:n.test", i)
				}
				last = r.next("m.room.member", rooms.StringPtr(user), user, map[string]any{"membership": membership})
				persist(b, db, linear(last))
			}
			writeSecs := time.Since(writeStart).Seconds()
			after, err := db.Stats(ctx)
			if err != nil {
				b.Fatal(err)
			}
			want := r.state
			cold := time.Now()
			got, err := db.StateAfter(ctx, last.EventID())
			if err != nil {
				b.Fatal(err)
			}
			coldMS := float64(time.Since(cold).Microseconds()) / 1000
			for b.Loop() {
				if got, err = db.StateAfter(ctx, last.EventID()); err != nil {
					b.Fatal(err)
				}
			}
			if err := equalState(got, want); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/read")
			b.ReportMetric(coldMS, "ms/cold-read")
			b.ReportMetric(float64(after.StateEntries-before.StateEntries)/1000, "entries/change")
			b.ReportMetric(float64(after.FullSnapshots-before.FullSnapshots), "full-rewrites")
			b.ReportMetric(float64(after.MaxChainLength), "max-chain")
			b.ReportMetric(1000/writeSecs, "changes/s")
			key := store.StateKey{Type: "m.room.member", StateKey: "@user050000:s0.test"}
			if _, err := db.StateEventBefore(ctx, last.EventID(), key); err != nil {
				b.Fatal(err)
			}
			single := time.Now()
			if _, err := db.StateEventBefore(ctx, last.EventID(), key); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(time.Since(single).Microseconds()), "µs/key-lookup")
		})
	}
}

// BenchmarkAuthChain measures AuthChain of one member event and
// AuthDifference of two 100,000-event states of a 100k-member room that
// differ in 10 events (the usual shape for state resolution).
func BenchmarkAuthChain(b *testing.B) {
	br := getBigRoom(b)
	ctx := context.Background()
	db := storetest.Open(b)
	batch, _ := br.joinBatch(b, 100_000)
	persist(b, db, batch)
	ids := func(evs []*rooms.Event) []string {
		out := make([]string, len(evs))
		for i, e := range evs {
			out[i] = e.EventID()
		}
		return out
	}
	b.Run("one-event", func(b *testing.B) {
		for b.Loop() {
			if _, err := db.AuthChain(ctx, []string{br.members[99_999].EventID()}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("difference-2x100k-differing-in-10", func(b *testing.B) {
		all := ids(append(append([]*rooms.Event{}, br.genesis...), br.members...))
		sets := [][]string{all, all[10:]}
		for b.Loop() {
			if _, err := db.AuthDifference(ctx, sets); err != nil {
				b.Fatal(err)
			}
		}
	})
}
