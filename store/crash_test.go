package store_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// crashHelperEnv selects the child mode of TestCrash_KillDuringWrites: the
// test binary, re-executed with it set to a database path, writes events
// until it is killed.
const crashHelperEnv = "FERRY_STORE_CRASH_HELPER"

// TestCrash_KillDuringWrites re-executes the test binary as a writer that
// persists batches in a loop and prints each batch's event IDs after the
// commit returns; it is killed with SIGKILL at a random moment, several
// rounds over one database. After each kill, every event reported
// committed must be held, SQLite's integrity check must pass, and the
// store's invariants (no event without its snapshot, no extremity or queue
// entry naming a missing event) must hold.
func TestCrash_KillDuringWrites(t *testing.T) {
	if path := os.Getenv(crashHelperEnv); path != "" {
		crashHelper(t, path)
		os.Exit(0)
	}
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "crash.db")
	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	var committed []string
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrash_KillDuringWrites$")
		cmd.Env = append(os.Environ(), crashHelperEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Let it commit some batches, then kill it mid-stride.
		wantLines := 5 + rng.IntN(40)
		extra := time.Duration(rng.IntN(30)) * time.Millisecond
		got := 0
		deadline := time.After(60 * time.Second) // generous: a loaded CI machine under -race is slow
	wait:
		for got < wantLines {
			select {
			case l, ok := <-lines:
				if !ok {
					break wait
				}
				if ids, ok := strings.CutPrefix(l, "committed "); ok {
					committed = append(committed, strings.Fields(ids)...)
					got++
				}
			case <-deadline:
				break wait
			}
		}
		time.Sleep(extra)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for l := range lines {
			if ids, ok := strings.CutPrefix(l, "committed "); ok {
				committed = append(committed, strings.Fields(ids)...)
			}
		}
		_ = cmd.Wait()
		if got == 0 {
			t.Fatalf("round %d: the writer committed nothing", round)
		}

		db, err := store.Open(ctx, path, store.Options{})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		missing, err := db.MissingEventIDs(ctx, committed)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) > 0 {
			t.Fatalf("round %d: %d of %d committed events lost, e.g. %s", round, len(missing), len(committed), missing[0])
		}
		if err := db.IntegrityCheck(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		cur, err := db.CurrentState(ctx, "!crash:a.test")
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ext, err := db.ForwardExtremities(ctx, "!crash:a.test")
		if err != nil || len(ext) != 1 {
			t.Fatalf("round %d: extremities %v, %v", round, ext, err)
		}
		after, err := db.StateAfter(ctx, ext[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := equalState(cur, after); err != nil {
			t.Fatalf("round %d: current state is not the state after the last event: %v", round, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d events committed over 5 kills", len(committed))
}

// crashHelper is the child: it resumes the room where the last run left
// it and persists batches forever, printing IDs after each commit.
func crashHelper(t *testing.T, path string) {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		os.Exit(2)
	}
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		fail(err)
	}
	r := newTestRoom(t, "crash")
	if ext, err := db.ForwardExtremities(ctx, r.id); err == nil && len(ext) > 0 {
		cur, err := db.CurrentState(ctx, r.id)
		if err != nil {
			fail(err)
		}
		r.state = cur
		r.last = ext
		se, err := db.Event(ctx, ext[0])
		if err != nil {
			fail(err)
		}
		r.depth = se.Event.Depth()
		r.ts = se.Event.OriginServerTS()
	} else {
		b := linear(r.genesis()...)
		if _, err := db.PersistEvents(ctx, b); err != nil {
			fail(err)
		}
		fmt.Println("committed", ids(b))
	}
	for i := 0; ; i++ {
		var evs []*rooms.Event
		for j := range 1 + i%4 {
			if (i+j)%3 == 0 {
				evs = append(evs, r.join(fmt.Sprintf("@u%d-%d-%d:b.test", time.Now().UnixNano(), i, j)))
			} else {
				evs = append(evs, r.message(strings.Repeat("x", 200)))
			}
		}
		b := linear(evs...)
		for k := range b.Events {
			b.Events[k].Destinations = []string{"b.test"}
			b.HostLog = append(b.HostLog, store.HostLogEntry{Kind: store.HostEvent, RoomID: r.id, EventID: evs[k].EventID()})
		}
		if _, err := db.PersistEvents(ctx, b); err != nil {
			fail(err)
		}
		fmt.Println("committed", ids(b))
	}
}

func ids(b store.Batch) string {
	out := make([]string, len(b.Events))
	for i, ne := range b.Events {
		out[i] = ne.Event.EventID()
	}
	return strings.Join(out, " ")
}
