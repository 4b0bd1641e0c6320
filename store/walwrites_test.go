//go:build linux && (amd64 || arm64)

package store

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
)

// walIndexFrames reads how many log frames the log's index says are
// committed (mxFrame of the index header, in native byte order).
func walIndexFrames(t *testing.T, dbPath string) int64 {
	t.Helper()
	b, err := os.ReadFile(dbPath + "-shm")
	if err != nil || len(b) < 20 {
		t.Fatalf("reading the log index: %v", err)
	}
	return int64(binary.LittleEndian.Uint32(b[16:20]))
}

// TestWALWrites_CommitIsOnDiskWhenItReturns: with frames gathered, every
// frame the log's index calls committed is in the log file as soon as the
// write returns, under both synchronous settings (FULL syncs the log at
// each commit, NORMAL does not), and a new connection reads it all back;
// and frames are in fact gathered (far fewer pwrite calls than writes).
func TestWALWrites_CommitIsOnDiskWhenItReturns(t *testing.T) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		t.Run(sync, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "wal.db")
			db, err := Open(ctx, path, Options{Synchronous: sync})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var pageSize int64
			if err := db.writer.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
				t.Fatal(err)
			}
			asked, written := walWriteCounts.asked.Load(), walWriteCounts.written.Load()
			room := "!wal:a.test"
			var last string
			var all []string
			for i := range 40 {
				var b Batch
				for k := range 25 {
					ev := walTestEvent(t, room, last, i*25+k)
					last = ev.EventID()
					all = append(all, last)
					b.Events = append(b.Events, NewEvent{Event: ev, Outcome: Outlier})
				}
				if _, err := db.PersistEvents(ctx, b); err != nil {
					t.Fatal(err)
				}
				st, err := os.Stat(path + "-wal")
				if err != nil {
					t.Fatal(err)
				}
				frames := walIndexFrames(t, path)
				if need := 32 + frames*(24+pageSize); st.Size() < need {
					t.Fatalf("batch %d: the index says %d frames are committed, but the log holds %d bytes of the %d they need", i, frames, st.Size(), need)
				}
			}
			asked, written = walWriteCounts.asked.Load()-asked, walWriteCounts.written.Load()-written
			if asked == 0 || written*4 > asked {
				t.Fatalf("%d log writes took %d pwrite calls: frames were not gathered", asked, written)
			}
			other, err := Open(ctx, path, Options{Synchronous: sync})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			missing, err := other.MissingEventIDs(ctx, all)
			if err != nil || len(missing) != 0 {
				t.Fatalf("a new connection misses %d events: %v", len(missing), err)
			}
			if err := other.IntegrityCheck(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// walTestEvent is a signed outlier message of room following prev.
func walTestEvent(t *testing.T, room, prev string, i int) *rooms.Event {
	t.Helper()
	v, err := rooms.LookupVersion("10")
	if err != nil {
		t.Fatal(err)
	}
	var prevs []string
	if prev != "" {
		prevs = []string{prev}
	}
	ev, err := rooms.BuildEvent(v, rooms.EventTemplate{
		Type: "m.room.message", Sender: "@a:a.test", RoomID: room,
		Content:    map[string]any{"msgtype": "m.text", "body": "a message long enough to fill a page now and then", "n": i},
		PrevEvents: prevs, AuthEvents: []string{}, Depth: int64(i + 1), OriginServerTS: int64(1_700_000_000_000 + i),
	}, walTestKey)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

var walTestKey = rooms.SigningKey{ServerName: "a.test", KeyID: "ed25519:1", Private: ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))}
