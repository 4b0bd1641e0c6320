package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	stdmaps "maps"
	"slices"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

func TestPersistEvents_LinearRoom(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "lin")
	gen := r.genesis()
	b := linear(gen...)
	b.RoomStatus = store.RoomCreated
	res := persist(t, db, b)
	if len(res.Stored) != 4 {
		t.Fatalf("stored %v", res.Stored)
	}
	afterGenesis := maps(r.state)
	bob := r.join("@bob:b.test")
	m1 := r.message("hello")
	b = linear(bob, m1)
	b.Events[1].Destinations = []string{"b.test"}
	b.HostLog = []store.HostLogEntry{{Kind: store.HostEvent, RoomID: r.id, EventID: m1.EventID()}}
	res = persist(t, db, b)
	if len(res.HostLog) != 1 || res.HostLog[0] != 1 {
		t.Fatalf("host log positions %v", res.HostLog)
	}

	room, err := db.Room(ctx, r.id)
	if err != nil || room.Version != "10" || room.Status != store.RoomCreated {
		t.Fatalf("room %+v, %v", room, err)
	}
	se, err := db.Event(ctx, m1.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if string(se.Event.JSON()) != string(m1.JSON()) || se.Outlier || se.Rejected || se.SoftFailed || se.Redacted {
		t.Fatalf("stored event differs: %+v", se)
	}
	if se.Event.Sender() != m1.Sender() || !slices.Equal(se.Event.PrevEvents(), m1.PrevEvents()) {
		t.Fatal("parsed fields differ")
	}
	// State before the message is everything so far; before bob's join it
	// is the genesis state.
	sb, err := db.StateBefore(ctx, m1.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if err := equalState(sb, r.state); err != nil {
		t.Fatal(err)
	}
	sb, err = db.StateBefore(ctx, bob.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if err := equalState(sb, afterGenesis); err != nil {
		t.Fatal(err)
	}
	sa, err := db.StateAfter(ctx, bob.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if err := equalState(sa, r.state); err != nil {
		t.Fatal(err)
	}
	cur, err := db.CurrentState(ctx, r.id)
	if err != nil {
		t.Fatal(err)
	}
	if err := equalState(cur, r.state); err != nil {
		t.Fatal(err)
	}
	id, err := db.CurrentStateEvent(ctx, r.id, store.StateKey{Type: "m.room.member", StateKey: "@bob:b.test"})
	if err != nil || id != bob.EventID() {
		t.Fatalf("current member = %q, %v", id, err)
	}
	if _, err := db.CurrentStateEvent(ctx, r.id, store.StateKey{Type: "m.room.topic"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	id, err = db.StateEventBefore(ctx, bob.EventID(), store.StateKey{Type: "m.room.join_rules"})
	if err != nil || id != gen[3].EventID() {
		t.Fatalf("join rules before bob = %q, %v", id, err)
	}
	if _, err := db.StateEventBefore(ctx, bob.EventID(), store.StateKey{Type: "m.room.member", StateKey: "@bob:b.test"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bob before his join: %v", err)
	}
	ext, err := db.ForwardExtremities(ctx, r.id)
	if err != nil || !slices.Equal(ext, []string{m1.EventID()}) {
		t.Fatalf("extremities %v, %v", ext, err)
	}
	servers, err := db.JoinedServers(ctx, r.id)
	if err != nil || !slices.Equal(servers, []string{"a.test", "b.test"}) {
		t.Fatalf("joined servers %v, %v", servers, err)
	}
	members, err := db.Members(ctx, r.id, "join")
	if err != nil || !slices.Equal(members, []string{"@alice:a.test", "@bob:b.test"}) {
		t.Fatalf("members %v, %v", members, err)
	}
	evs, err := db.Events(ctx, []string{m1.EventID(), "$nope", gen[0].EventID()})
	if err != nil || len(evs) != 2 || evs[0].Event.EventID() != m1.EventID() || evs[1].Event.EventID() != gen[0].EventID() {
		t.Fatalf("events %v, %v", evs, err)
	}
	missing, err := db.MissingEventIDs(ctx, []string{"$nope", m1.EventID(), "$nope"})
	if err != nil || !slices.Equal(missing, []string{"$nope"}) {
		t.Fatalf("missing %v, %v", missing, err)
	}
	if _, err := db.Event(ctx, "$nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing event: %v", err)
	}
	pdus, _, err := db.PeekOutbound(ctx, "b.test", 50, 100)
	if err != nil || len(pdus) != 1 || pdus[0].EventID != m1.EventID() || string(pdus[0].JSON) != string(m1.JSON()) {
		t.Fatalf("queued %+v, %v", pdus, err)
	}
	log, err := db.ReadHostLog(ctx, 0, 10)
	if err != nil || len(log) != 1 || log[0].EventID != m1.EventID() || string(log[0].Payload) != string(m1.JSON()) {
		t.Fatalf("host log %+v, %v", log, err)
	}
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}

	// Persisting the same events again changes nothing.
	res = persist(t, db, linear(bob, m1))
	if len(res.Stored) != 0 {
		t.Fatalf("duplicates stored: %v", res.Stored)
	}
	ext, _ = db.ForwardExtremities(ctx, r.id)
	if !slices.Equal(ext, []string{m1.EventID()}) {
		t.Fatalf("extremities after duplicate %v", ext)
	}
}

func maps(m store.StateMap) store.StateMap {
	out := make(store.StateMap, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestPersistEvents_ForksAndOutcomes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "fork")
	persist(t, db, linear(r.genesis()...))
	base := r.last
	a := r.build("m.room.message", nil, r.creator, map[string]any{"body": "a"}, base)
	bEv := r.build("m.room.topic", rooms.StringPtr(""), r.creator, map[string]any{"topic": "b"}, base)
	persist(t, db, linear(a))
	persist(t, db, store.Batch{Events: []store.NewEvent{{Event: bEv, Outcome: store.Accepted, StateBefore: &store.StateRef{AfterEvent: base[0]}}}})
	ext, _ := db.ForwardExtremities(ctx, r.id)
	want := []string{a.EventID(), bEv.EventID()}
	slices.Sort(want)
	if !slices.Equal(ext, want) {
		t.Fatalf("fork extremities %v, want %v", ext, want)
	}
	r.depth++
	merge := r.build("m.room.message", nil, r.creator, map[string]any{"body": "merge"}, want)
	soft := r.build("m.room.message", nil, r.creator, map[string]any{"body": "soft"}, []string{merge.EventID()})
	rej := r.build("m.room.name", rooms.StringPtr(""), r.creator, map[string]any{"name": "no"}, []string{merge.EventID()})
	outl := r.build("m.room.message", nil, r.creator, map[string]any{"body": "outlier"}, []string{merge.EventID()})
	res := persist(t, db, store.Batch{
		Events: []store.NewEvent{
			{Event: merge, Outcome: store.Accepted, StateBefore: &store.StateRef{AfterEvent: a.EventID(),
				Changes: store.StateMap{{Type: "m.room.topic"}: bEv.EventID()}}},
			{Event: soft, Outcome: store.SoftFailed, StateBefore: &store.StateRef{AfterEvent: merge.EventID()}},
			{Event: rej, Outcome: store.Rejected, RejectedReason: "not allowed", StateBefore: &store.StateRef{AfterEvent: merge.EventID()}},
			{Event: outl, Outcome: store.Outlier},
		},
		CurrentState: &store.StateRef{AfterEvent: rej.EventID()},
	})
	if len(res.Stored) != 4 {
		t.Fatalf("stored %v", res.Stored)
	}
	ext, _ = db.ForwardExtremities(ctx, r.id)
	if !slices.Equal(ext, []string{merge.EventID()}) {
		t.Fatalf("extremities after merge %v", ext)
	}
	se, _ := db.Event(ctx, soft.EventID())
	if !se.SoftFailed {
		t.Fatal("soft-failed flag lost")
	}
	se, _ = db.Event(ctx, rej.EventID())
	if !se.Rejected || se.RejectedReason != "not allowed" {
		t.Fatalf("rejected flags lost: %+v", se)
	}
	// A rejected state event does not change the state after it.
	sa, err := db.StateAfter(ctx, rej.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sa[store.StateKey{Type: "m.room.name"}]; ok || sa[store.StateKey{Type: "m.room.topic"}] != bEv.EventID() {
		t.Fatalf("state after rejected event %v", sa)
	}
	cur, _ := db.CurrentState(ctx, r.id)
	if err := equalState(cur, sa); err != nil {
		t.Fatal(err)
	}
	se, _ = db.Event(ctx, outl.EventID())
	if !se.Outlier {
		t.Fatal("outlier flag lost")
	}
	if _, err := db.StateBefore(ctx, outl.EventID()); !errors.Is(err, store.ErrNoState) {
		t.Fatalf("state of outlier: %v", err)
	}
	// The outlier comes again with its state: it is promoted.
	res = persist(t, db, store.Batch{Events: []store.NewEvent{{Event: outl, Outcome: store.Accepted, StateBefore: &store.StateRef{AfterEvent: merge.EventID()}}}})
	if len(res.Stored) != 1 {
		t.Fatalf("promotion stored %v", res.Stored)
	}
	se, _ = db.Event(ctx, outl.EventID())
	if se.Outlier {
		t.Fatal("outlier not promoted")
	}
	ext, _ = db.ForwardExtremities(ctx, r.id)
	if !slices.Equal(ext, []string{outl.EventID()}) {
		t.Fatalf("extremities after promotion %v", ext)
	}
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestPersistEvents_AllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "atomic")
	gen := r.genesis()
	m := r.message("x")
	b := linear(append(gen, m)...)
	b.Events[4].Destinations = []string{"b.test"}
	b.HostLog = []store.HostLogEntry{{Kind: store.HostEvent, RoomID: r.id, EventID: m.EventID()}}
	// The current state names an event nobody has: the whole batch fails.
	b.CurrentState = &store.StateRef{AfterEvent: "$unknown"}
	if _, err := db.PersistEvents(ctx, b); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("persist: %v, want ErrNotFound", err)
	}
	if missing, _ := db.MissingEventIDs(ctx, []string{gen[0].EventID(), m.EventID()}); len(missing) != 2 {
		t.Fatalf("events written by a failed batch: missing only %v", missing)
	}
	if _, err := db.Room(ctx, r.id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("room written by a failed batch: %v", err)
	}
	if head, _ := db.HostLogHead(ctx); head != 0 {
		t.Fatalf("host log written by a failed batch: %d", head)
	}
	if ds, _ := db.PendingDestinations(ctx); len(ds) != 0 {
		t.Fatalf("queue written by a failed batch: %v", ds)
	}
	// Accepted events need their state; batches stay in one room.
	if _, err := db.PersistEvents(ctx, store.Batch{Events: []store.NewEvent{{Event: gen[0], Outcome: store.Accepted}}}); err == nil {
		t.Fatal("accepted event without state persisted")
	}
	other := newTestRoom(t, "other")
	if _, err := db.PersistEvents(ctx, store.Batch{Events: []store.NewEvent{{Event: gen[0], Outcome: store.Outlier}, {Event: other.create(), Outcome: store.Outlier}}}); err == nil {
		t.Fatal("batch of two rooms persisted")
	}
	persist(t, db, linear(append(gen, m)...))
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBackfillAndMissingEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "walk")
	evs := r.genesis()
	for i := range 20 {
		evs = append(evs, r.message(fmt.Sprint(i)))
	}
	persist(t, db, linear(evs...))
	ids := func(ses []*store.StoredEvent) []string {
		out := make([]string, len(ses))
		for i, se := range ses {
			out[i] = se.Event.EventID()
		}
		return out
	}
	got, err := db.Backfill(ctx, r.id, []string{evs[23].EventID()}, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{evs[23].EventID(), evs[22].EventID(), evs[21].EventID(), evs[20].EventID(), evs[19].EventID()}
	if !slices.Equal(ids(got), want) {
		t.Fatalf("backfill %v, want %v", ids(got), want)
	}
	got, err = db.Backfill(ctx, r.id, []string{evs[2].EventID()}, 100)
	if err != nil || len(got) != 3 {
		t.Fatalf("backfill to the start: %d events, %v", len(got), err)
	}
	got, err = db.MissingEvents(ctx, r.id, []string{evs[10].EventID()}, []string{evs[15].EventID()}, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{evs[11].EventID(), evs[12].EventID(), evs[13].EventID(), evs[14].EventID()}
	if !slices.Equal(ids(got), want) {
		t.Fatalf("missing events %v, want %v", ids(got), want)
	}
	got, err = db.MissingEvents(ctx, r.id, nil, []string{evs[15].EventID()}, 2, 0)
	if err != nil || !slices.Equal(ids(got), []string{evs[13].EventID(), evs[14].EventID()}) {
		t.Fatalf("limited missing events %v, %v", ids(got), err)
	}
	got, err = db.MissingEvents(ctx, r.id, nil, []string{evs[15].EventID()}, 100, evs[12].Depth())
	if err != nil || len(got) != 3 {
		t.Fatalf("min depth: %v, %v", ids(got), err)
	}
	if _, err := db.Backfill(ctx, "!none:a.test", []string{evs[2].EventID()}, 5); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("backfill of unknown room: %v", err)
	}
}

func TestAuthChainAndDifference(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "auth")
	gen := r.genesis() // create, alice join, pl, join rules
	bob := r.join("@bob:b.test")
	carol := r.join("@carol:c.test")
	persist(t, db, linear(append(gen, bob, carol)...))
	chain, err := db.AuthChain(ctx, []string{bob.EventID()})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{gen[0].EventID(), gen[1].EventID(), gen[2].EventID(), gen[3].EventID()}
	slices.Sort(want)
	if !slices.Equal(chain, want) {
		t.Fatalf("auth chain %v, want %v", chain, want)
	}
	diff, err := db.AuthDifference(ctx, [][]string{{bob.EventID()}, {carol.EventID()}})
	if err != nil || len(diff) != 0 {
		t.Fatalf("difference of siblings %v, %v", diff, err)
	}
	diff, err = db.AuthDifference(ctx, [][]string{{bob.EventID()}, {gen[2].EventID()}})
	if err != nil {
		t.Fatal(err)
	}
	// pl's chain: create, alice join. bob's: those plus pl and join rules.
	want = []string{gen[2].EventID(), gen[3].EventID()}
	slices.Sort(want)
	if !slices.Equal(diff, want) {
		t.Fatalf("auth difference %v, want %v", diff, want)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "redact")
	evs := r.genesis()
	m := r.message("secret")
	persist(t, db, linear(append(evs, m)...))
	if err := db.Redact(ctx, m.EventID()); err != nil {
		t.Fatal(err)
	}
	se, err := db.Event(ctx, m.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if !se.Redacted || len(se.Event.Content()) != 0 || se.Event.EventID() != m.EventID() {
		t.Fatalf("redacted event %+v content %v", se, se.Event.Content())
	}
	if err := db.Redact(ctx, "$none"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("redact missing: %v", err)
	}
}

// TestPersistEvents_NumbersMixWithPlaceholders interleaves new events
// (numbered by the store, written in bulk) with events whose prev events
// are missing (placeholders numbered by the database) in one batch.
func TestPersistEvents_NumbersMixWithPlaceholders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "mix")
	persist(t, db, linear(r.genesis()...))
	base := r.last[0]
	var b store.Batch
	var want []string
	for i := range 12 {
		prev := []string{base}
		if i%3 == 1 {
			prev = []string{base, fakeID(fmt.Sprintf("missing%d", i))}
		}
		ev := r.build("m.room.topic", rooms.StringPtr(""), r.creator, map[string]any{"topic": fmt.Sprint(i)}, prev)
		b.Events = append(b.Events, store.NewEvent{Event: ev, Outcome: store.Accepted, StateBefore: &store.StateRef{AfterEvent: base}})
		base = ev.EventID()
		want = append(want, ev.EventID())
	}
	b.CurrentState = &store.StateRef{AfterEvent: base}
	res := persist(t, db, b)
	if len(res.Stored) != 12 {
		t.Fatalf("stored %d", len(res.Stored))
	}
	evs, err := db.Events(ctx, want)
	if err != nil || len(evs) != 12 {
		t.Fatalf("events %d, %v", len(evs), err)
	}
	for i, id := range want {
		st, err := db.StateAfter(ctx, id)
		if err != nil || st[store.StateKey{Type: "m.room.topic"}] != id {
			t.Fatalf("state after event %d: %v, %v", i, st[store.StateKey{Type: "m.room.topic"}], err)
		}
	}
	missing, _ := db.MissingEventIDs(ctx, []string{fakeID("missing1"), fakeID("missing4")})
	if len(missing) != 2 {
		t.Fatalf("placeholders reported held: %v", missing)
	}
	ext, _ := db.ForwardExtremities(ctx, r.id)
	if !slices.Equal(ext, []string{base}) {
		t.Fatalf("extremities %v", ext)
	}
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
}

// fakeID is a well-formed event ID of no event.
func fakeID(seed string) string {
	h := sha256.Sum256([]byte(seed))
	return "$" + rooms.EncodeBase64URL(h[:])
}

func TestEventNearTimestamp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "clock")
	evs := r.genesis()
	for i := range 5 {
		evs = append(evs, r.message(fmt.Sprint(i)))
	}
	persist(t, db, linear(evs...))
	mid := evs[6]
	for _, forward := range []bool{true, false} {
		id, ts, err := db.EventNearTimestamp(ctx, r.id, mid.OriginServerTS(), forward)
		if err != nil || id != mid.EventID() || ts != mid.OriginServerTS() {
			t.Fatalf("forward=%v at %d: %s %d %v, want %s", forward, mid.OriginServerTS(), id, ts, err, mid.EventID())
		}
	}
	first, last := evs[0], evs[len(evs)-1]
	if id, _, err := db.EventNearTimestamp(ctx, r.id, 0, true); err != nil || id != first.EventID() {
		t.Fatalf("forward from 0: %s %v, want the create event", id, err)
	}
	if id, _, err := db.EventNearTimestamp(ctx, r.id, last.OriginServerTS()+1000, false); err != nil || id != last.EventID() {
		t.Fatalf("backward from the future: %s %v, want the last event", id, err)
	}
	if _, _, err := db.EventNearTimestamp(ctx, r.id, last.OriginServerTS()+1, true); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("forward past the end: %v, want ErrNotFound", err)
	}
	if _, _, err := db.EventNearTimestamp(ctx, r.id, first.OriginServerTS()-1, false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("backward before the start: %v, want ErrNotFound", err)
	}
	if _, _, err := db.EventNearTimestamp(ctx, "!nowhere:a.test", 0, true); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown room: %v, want ErrNotFound", err)
	}
}

// TestUnheldEvents: events not held are told apart by whether the store
// has a placeholder of them; one written as Absent skips the look-up, and
// when that was wrong (a placeholder exists) the write fails and keeps
// nothing, while the same write without the claim succeeds.
func TestUnheldEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "unheld")
	gen := r.genesis()
	persist(t, db, linear(gen...))
	before := r.last
	x := r.build("m.room.message", nil, r.creator, map[string]any{"body": "x"}, before)
	// y names x, which is not held: x gets a placeholder.
	y := r.build("m.room.message", nil, r.creator, map[string]any{"body": "y"}, []string{x.EventID()})
	persist(t, db, store.Batch{Events: []store.NewEvent{{Event: y, Outcome: store.Accepted, StateBefore: &store.StateRef{AfterEvent: before[0]}}}})

	held, unknown := gen[0].EventID(), fakeID("unknown")
	unheld, err := db.UnheldEvents(ctx, []string{held, x.EventID(), unknown})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{x.EventID(): false, unknown: true}; !stdmaps.Equal(unheld, want) {
		t.Fatalf("unheld %v, want %v", unheld, want)
	}
	for id, want := range map[string]map[string]bool{held: {}, x.EventID(): {x.EventID(): false}, unknown: {unknown: true}} {
		got, err := db.UnheldEvents(ctx, []string{id})
		if err != nil || !stdmaps.Equal(got, want) {
			t.Fatalf("UnheldEvents(%s) = %v, %v; want %v", id, got, err, want)
		}
	}

	wrong := store.Batch{Events: []store.NewEvent{{Event: x, Outcome: store.Accepted, StateBefore: &store.StateRef{AfterEvent: before[0]}, Absent: true}}}
	if _, err := db.PersistEvents(ctx, wrong); err == nil {
		t.Fatal("an event claimed absent was written over its placeholder")
	}
	if unheld, _ := db.UnheldEvents(ctx, []string{x.EventID()}); !stdmaps.Equal(unheld, map[string]bool{x.EventID(): false}) {
		t.Fatalf("after the failed write: %v", unheld)
	}
	wrong.Events[0].Absent = false
	persist(t, db, wrong)
	z := r.build("m.room.message", nil, r.creator, map[string]any{"body": "z"}, []string{y.EventID()})
	res := persist(t, db, store.Batch{Events: []store.NewEvent{{Event: z, Outcome: store.Accepted, StateBefore: &store.StateRef{AfterEvent: before[0]}, Absent: true}}})
	if !slices.Equal(res.Stored, []string{z.EventID()}) {
		t.Fatalf("stored %v", res.Stored)
	}
	if unheld, _ := db.UnheldEvents(ctx, []string{x.EventID(), y.EventID(), z.EventID()}); len(unheld) != 0 {
		t.Fatalf("still unheld: %v", unheld)
	}
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
}
