package store_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

func TestServerKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	pub := testKey.PublicKey()
	ks := []keys.StoredKey{
		{ServerName: "b.test", KeyID: "ed25519:new", PublicKey: pub, ValidUntilTS: 2000, FetchedTS: 100, Source: "direct"},
		{ServerName: "b.test", KeyID: "ed25519:old", PublicKey: pub, ValidUntilTS: 1000, Expired: true, FetchedTS: 100, Source: "notary:n.test"},
		{ServerName: "c.test", KeyID: "ed25519:1", PublicKey: pub, ValidUntilTS: 5, FetchedTS: 1, Source: "direct"},
	}
	if err := db.StoreServerKeys(ctx, ks); err != nil {
		t.Fatal(err)
	}
	got, err := db.LoadServerKeys(ctx, "b.test")
	if err != nil || len(got) != 2 {
		t.Fatalf("keys %+v, %v", got, err)
	}
	if got[0].KeyID != "ed25519:new" || !got[0].PublicKey.Equal(pub) || got[0].ValidUntilTS != 2000 || got[0].Expired || got[0].Source != "direct" || got[0].ServerName != "b.test" {
		t.Fatalf("key %+v", got[0])
	}
	if !got[1].Expired || got[1].Source != "notary:n.test" || got[1].FetchedTS != 100 {
		t.Fatalf("old key %+v", got[1])
	}
	// A refetch replaces the record.
	ks[0].ValidUntilTS, ks[0].FetchedTS = 9000, 500
	if err := db.StoreServerKeys(ctx, ks[:1]); err != nil {
		t.Fatal(err)
	}
	got, _ = db.LoadServerKeys(ctx, "b.test")
	if got[0].ValidUntilTS != 9000 || got[0].FetchedTS != 500 {
		t.Fatalf("refetched key %+v", got[0])
	}
	if got, err := db.LoadServerKeys(ctx, "none.test"); err != nil || len(got) != 0 {
		t.Fatalf("unknown server: %v, %v", got, err)
	}
	bad := ks[0]
	bad.PublicKey = ed25519.PublicKey{1, 2}
	if err := db.StoreServerKeys(ctx, []keys.StoredKey{bad}); err == nil {
		t.Fatal("short public key stored")
	}
}

func TestInboundTxns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.UnixMilli(1_000_000)
	db := storetest.Open(t, store.Options{Now: func() time.Time { return now }})
	if _, err := db.TxnResponse(ctx, "b.test", "t1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unseen txn: %v", err)
	}
	if err := db.StoreTxnResponse(ctx, "b.test", "t1", []byte(`{"pdus":{}}`)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if err := db.StoreTxnResponse(ctx, "b.test", "t2", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	resp, err := db.TxnResponse(ctx, "b.test", "t1")
	if err != nil || string(resp) != `{"pdus":{}}` {
		t.Fatalf("txn response %s, %v", resp, err)
	}
	if _, err := db.TxnResponse(ctx, "c.test", "t1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("txn of another origin: %v", err)
	}
	n, err := db.ExpireTxns(ctx, now.Add(-time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("expired %d, %v", n, err)
	}
	if _, err := db.TxnResponse(ctx, "b.test", "t1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired txn: %v", err)
	}
	if _, err := db.TxnResponse(ctx, "b.test", "t2"); err != nil {
		t.Fatalf("kept txn: %v", err)
	}
}

func TestOutboundQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.UnixMilli(5_000)
	db := storetest.Open(t, store.Options{Now: func() time.Time { return now }})
	r := newTestRoom(t, "queue")
	evs := r.genesis()
	for range 3 {
		evs = append(evs, r.message("m"))
	}
	b := linear(evs...)
	for i := 4; i < 7; i++ {
		b.Events[i].Destinations = []string{"b.test", "c.test"}
	}
	persist(t, db, b)
	if err := db.EnqueueEDU(ctx, []string{"b.test"}, []byte(`{"edu_type":"m.typing"}`)); err != nil {
		t.Fatal(err)
	}
	ds, err := db.PendingDestinations(ctx)
	if err != nil || !slices.Equal(ds, []string{"b.test", "c.test"}) {
		t.Fatalf("pending %v, %v", ds, err)
	}
	pdus, edus, err := db.PeekOutbound(ctx, "b.test", 2, 10)
	if err != nil || len(pdus) != 2 || len(edus) != 1 || pdus[0].EventID != evs[4].EventID() || string(edus[0].JSON) != `{"edu_type":"m.typing"}` {
		t.Fatalf("peek %+v %+v %v", pdus, edus, err)
	}
	positions := []int64{pdus[0].Pos, pdus[1].Pos, edus[0].Pos}
	if err := db.BeginTxn(ctx, "b.test", "txn1", []byte(`{"body":1}`), positions); err != nil {
		t.Fatal(err)
	}
	// Items of the transaction in flight are not offered again.
	pdus, edus, _ = db.PeekOutbound(ctx, "b.test", 50, 100)
	if len(pdus) != 1 || pdus[0].EventID != evs[6].EventID() || len(edus) != 0 {
		t.Fatalf("peek during txn %+v %+v", pdus, edus)
	}
	if err := db.RecordFailure(ctx, "b.test", now.Add(time.Minute), "connection refused"); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordFailure(ctx, "b.test", now.Add(2*time.Minute), "timeout"); err != nil {
		t.Fatal(err)
	}
	d, err := db.Destination(ctx, "b.test")
	if err != nil || d.Failures != 2 || d.LastError != "timeout" || d.BackoffUntil != now.Add(2*time.Minute).UnixMilli() ||
		d.TxnID != "txn1" || string(d.TxnBody) != `{"body":1}` || !slices.Equal(d.TxnPositions, positions) || d.Pending != 4 || d.LastFailureTS != now.UnixMilli() {
		t.Fatalf("destination %+v, %v", d, err)
	}
	now = now.Add(time.Hour)
	if err := db.CompleteTxn(ctx, "b.test"); err != nil {
		t.Fatal(err)
	}
	d, _ = db.Destination(ctx, "b.test")
	if d.Failures != 0 || d.BackoffUntil != 0 || d.TxnID != "" || d.Pending != 1 || d.LastSuccessTS != now.UnixMilli() || len(d.TxnPositions) != 0 {
		t.Fatalf("after completion %+v", d)
	}
	// Catching up: keep only the newest PDU for c.test.
	n, err := db.TrimOutboundPDUs(ctx, "c.test", 1)
	if err != nil || n != 2 {
		t.Fatalf("trimmed %d, %v", n, err)
	}
	pdus, _, _ = db.PeekOutbound(ctx, "c.test", 50, 100)
	if len(pdus) != 1 || pdus[0].EventID != evs[6].EventID() {
		t.Fatalf("after trim %+v", pdus)
	}
	d, err = db.Destination(ctx, "c.test")
	if err != nil || d.Name != "c.test" || d.Pending != 1 || d.Failures != 0 {
		t.Fatalf("fresh destination %+v, %v", d, err)
	}
	all, err := db.Destinations(ctx)
	if err != nil || len(all) != 1 || all[0].Name != "b.test" {
		t.Fatalf("destinations %+v, %v", all, err)
	}
}

func TestHostLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "host")
	evs := r.genesis()
	persist(t, db, linear(evs...))
	if _, err := db.AppendHostLog(ctx, store.HostLogEntry{Kind: "bogus"}); err == nil {
		t.Fatal("unknown kind appended")
	}
	if _, err := db.AppendHostLog(ctx, store.HostLogEntry{Kind: store.HostEvent, EventID: "$none"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("entry for a missing event: %v", err)
	}

	var wg sync.WaitGroup
	woke := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		woke <- db.WaitHostLog(ctx, 0)
	}()
	pos, err := db.AppendHostLog(ctx,
		store.HostLogEntry{Kind: store.HostInvite, RoomID: "!x:b.test", Payload: []byte(`{"invite":1}`)},
		store.HostLogEntry{Kind: store.HostEvent, RoomID: r.id, EventID: evs[1].EventID()},
		store.HostLogEntry{Kind: store.HostEDU, Payload: []byte(`{"edu_type":"m.receipt"}`)},
	)
	if err != nil || !slices.Equal(pos, []int64{1, 2, 3}) {
		t.Fatalf("positions %v, %v", pos, err)
	}
	wg.Wait()
	if err := <-woke; err != nil {
		t.Fatalf("wait: %v", err)
	}
	recs, err := db.ReadHostLog(ctx, 1, 10)
	if err != nil || len(recs) != 2 || recs[0].Kind != store.HostEvent || recs[0].EventID != evs[1].EventID() ||
		string(recs[0].Payload) != string(evs[1].JSON()) || recs[1].Kind != store.HostEDU || recs[1].TS == 0 {
		t.Fatalf("records %+v, %v", recs, err)
	}
	if head, err := db.HostLogHead(ctx); err != nil || head != 3 {
		t.Fatalf("head %d, %v", head, err)
	}
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := db.WaitHostLog(tctx, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past the head: %v", err)
	}

	if c, err := db.Cursor(ctx, "webhook"); err != nil || c != 0 {
		t.Fatalf("new cursor %d, %v", c, err)
	}
	if err := db.SetCursor(ctx, "webhook", 2); err != nil {
		t.Fatal(err)
	}
	if err := db.SetCursor(ctx, "webhook", 1); err != nil {
		t.Fatal(err)
	}
	if c, _ := db.Cursor(ctx, "webhook"); c != 2 {
		t.Fatalf("cursor moved back to %d", c)
	}
}

// TestConcurrentReadersDuringWrites reads state and events from several
// goroutines while a writer appends events: readers never fail and always
// see a consistent room (the current state's events are held).
func TestConcurrentReadersDuringWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	r := newTestRoom(t, "conc")
	persist(t, db, linear(r.genesis()...))
	var batches []store.Batch
	for i := range 40 {
		ev := r.join("@u" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ":b.test")
		m := r.message("m")
		batches = append(batches, linear(ev, m))
	}
	done := make(chan struct{})
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				cur, err := db.CurrentState(ctx, r.id)
				if err != nil {
					errs <- err
					return
				}
				ids := make([]string, 0, len(cur))
				for _, id := range cur {
					ids = append(ids, id)
				}
				evs, err := db.Events(ctx, ids)
				if err != nil {
					errs <- err
					return
				}
				if len(evs) != len(ids) {
					errs <- errors.New("current state names events not held")
					return
				}
				ext, err := db.ForwardExtremities(ctx, r.id)
				if err != nil {
					errs <- err
					return
				}
				if _, err := db.StateBefore(ctx, ext[0]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for _, b := range batches {
		persist(t, db, b)
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	members, err := db.Members(ctx, r.id, "join")
	if err != nil || len(members) != 41 {
		t.Fatalf("members %d, %v", len(members), err)
	}
}

// TestOutboundQueue_CompleteItemsAndCountUpTo: a transaction answered at
// its first attempt, never recorded in flight, takes its items out of the
// queue and resets the destination's failures; a sender's count of its
// queue stops at the limit it asks for, Health's does not.
func TestOutboundQueue_CompleteItemsAndCountUpTo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.UnixMilli(7_000)
	db := storetest.Open(t, store.Options{Now: func() time.Time { return now }})
	r := newTestRoom(t, "items")
	evs := r.genesis()
	for range 6 {
		evs = append(evs, r.message("m"))
	}
	b := linear(evs...)
	for i := len(evs) - 6; i < len(evs); i++ {
		b.Events[i].Destinations = []string{"b.test"}
	}
	persist(t, db, b)
	if err := db.RecordFailure(ctx, "b.test", now.Add(time.Minute), "refused"); err != nil {
		t.Fatal(err)
	}
	d, err := db.DestinationUpTo(ctx, "b.test", 4)
	if err != nil || d.Pending != 4 || d.Failures != 1 {
		t.Fatalf("counted up to 4: %+v, %v", d, err)
	}
	if d, err = db.Destination(ctx, "b.test"); err != nil || d.Pending != 6 {
		t.Fatalf("counted in full: %+v, %v", d, err)
	}
	if d, err = db.DestinationUpTo(ctx, "never.test", 4); err != nil || d.Pending != 0 || d.Name != "never.test" {
		t.Fatalf("unknown destination: %+v, %v", d, err)
	}
	pdus, _, err := db.PeekOutbound(ctx, "b.test", 2, 0)
	if err != nil || len(pdus) != 2 {
		t.Fatalf("peek %+v, %v", pdus, err)
	}
	now = now.Add(time.Hour)
	if err := db.CompleteItems(ctx, "b.test", []int64{pdus[0].Pos, pdus[1].Pos}); err != nil {
		t.Fatal(err)
	}
	d, err = db.Destination(ctx, "b.test")
	if err != nil || d.Pending != 4 || d.Failures != 0 || d.BackoffUntil != 0 || d.LastSuccessTS != now.UnixMilli() || d.TxnID != "" {
		t.Fatalf("after completing two items: %+v, %v", d, err)
	}
	rest, _, _ := db.PeekOutbound(ctx, "b.test", 50, 0)
	if len(rest) != 4 || rest[0].EventID != evs[len(evs)-4].EventID() {
		t.Fatalf("left in the queue: %+v", rest)
	}
}
