package homeserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/store"
)

// fakeClock is the delivery's clock: waiting returns at once and moves
// the clock on, and every wait is recorded.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.UnixMilli(1_800_000_000_000)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.waits)
}

// attempt is one transaction a fake destination was sent.
type attempt struct {
	txnID string
	body  []byte
	err   error
}

// fakeDest is a scripted destination: plan decides the outcome of each
// attempt (nil: accept); delivered transactions are recorded.
type fakeDest struct {
	plan     func(n int) error // n counts attempts from 0
	block    bool              // requests hang until the sender stops
	blocked  int               // requests that hung
	refuse   bool              // every PDU gets a per-PDU error
	attempts []attempt
	bodies   map[string]bool // "body" of every delivered message
	edus     []string        // edu_type of every delivered EDU
	maxPDUs  int
}

// fakeNet is a Transport over scripted destinations.
type fakeNet struct {
	mu    sync.Mutex
	dests map[string]*fakeDest
}

var errDown = errors.New("destination answered 500")

func newFakeNet(names ...string) *fakeNet {
	n := &fakeNet{dests: map[string]*fakeDest{}}
	for _, name := range names {
		n.dests[name] = &fakeDest{bodies: map[string]bool{}}
	}
	return n
}

func (n *fakeNet) SendTransactionBody(ctx context.Context, destination, txnID string, body []byte) (map[string]string, error) {
	n.mu.Lock()
	d := n.dests[destination]
	if d == nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("no route to %s", destination)
	}
	if d.block {
		d.blocked++
		n.mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	defer n.mu.Unlock()
	var err error
	if d.plan != nil {
		err = d.plan(len(d.attempts))
	}
	d.attempts = append(d.attempts, attempt{txnID: txnID, body: slices.Clone(body), err: err})
	if err != nil {
		return nil, err
	}
	var txn struct {
		Origin string            `json:"origin"`
		PDUs   []json.RawMessage `json:"pdus"`
		EDUs   []struct {
			Type string `json:"edu_type"`
		} `json:"edus"`
	}
	if err := json.Unmarshal(body, &txn); err != nil {
		return nil, fmt.Errorf("bad transaction: %w", err)
	}
	if txn.Origin != ourName {
		return nil, fmt.Errorf("origin %q", txn.Origin)
	}
	d.maxPDUs = max(d.maxPDUs, len(txn.PDUs))
	answer := map[string]string{}
	for i, raw := range txn.PDUs {
		var pdu struct {
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		}
		if err := json.Unmarshal(raw, &pdu); err != nil {
			return nil, fmt.Errorf("bad PDU: %w", err)
		}
		if pdu.Content.Body != "" {
			d.bodies[pdu.Content.Body] = true
		}
		if d.refuse {
			answer[fmt.Sprintf("$pdu%d", i)] = "refused by the script"
		}
	}
	for _, e := range txn.EDUs {
		d.edus = append(d.edus, e.Type)
	}
	return answer, nil
}

// with runs f on a destination under the lock.
func (n *fakeNet) with(name string, f func(d *fakeDest)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f(n.dests[name])
}

func (n *fakeNet) delivered(name string) int {
	var c int
	n.with(name, func(d *fakeDest) { c = len(d.bodies) })
	return c
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// outboundRoom creates a public room of alice with a joined user on each
// of servers.
func outboundRoom(t *testing.T, e *homeserver.Engine, servers ...string) string {
	t.Helper()
	roomID, err := e.CreateRoom(context.Background(), homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		joinRemote(t, e, roomID, "@u:"+s)
	}
	return roomID
}

func sendMessages(t *testing.T, e *homeserver.Engine, roomID, prefix string, n int) {
	t.Helper()
	for i := range n {
		if _, err := e.SendEvent(context.Background(), roomID, homeserver.LocalEvent{
			Type: "m.room.message", Sender: alice, Content: map[string]any{"body": fmt.Sprintf("%s%d", prefix, i)},
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func newDelivery(t *testing.T, db *store.DB, net homeserver.Transport, clock *fakeClock) *homeserver.Delivery {
	t.Helper()
	return &homeserver.Delivery{
		ServerName: ourName, Store: db, Transport: net, Logger: zerolog.New(zerolog.NewTestWriter(t)),
		Now: clock.Now, After: clock.After, Jitter: func() float64 { return 0 },
		BackoffBase: time.Second, BackoffMax: time.Hour,
	}
}

func health(t *testing.T, d *homeserver.Delivery, name string) homeserver.DestinationHealth {
	t.Helper()
	all, err := d.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range all {
		if h.Name == name {
			return h
		}
	}
	return homeserver.DestinationHealth{Name: name}
}

// TestDelivery_SeveralDestinations: local events and EDUs reach every
// server in the room, in transactions of at most 50 PDUs, and the senders
// end once the queues are empty.
func TestDelivery_SeveralDestinations(t *testing.T) {
	e := newEngine(t)
	servers := []string{"a.test", "b.test", "c.test"}
	net := newFakeNet(servers...)
	d := newDelivery(t, e.Store, net, newFakeClock())
	e.OnQueued = func(dests []string) { d.Notify(dests...) }
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	roomID := outboundRoom(t, e, servers...)
	sendMessages(t, e, roomID, "m", 120)
	if err := e.SendTyping(context.Background(), roomID, alice, true); err != nil {
		t.Fatal(err)
	}
	if err := e.SendReceipt(context.Background(), roomID, alice, "m.read", "$x", 1); err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		waitFor(t, "delivery to "+s, func() bool {
			var n int
			net.with(s, func(fd *fakeDest) { n = len(fd.edus) })
			return net.delivered(s) == 120 && n == 2
		})
		net.with(s, func(fd *fakeDest) {
			if fd.maxPDUs > homeserver.MaxTxnPDUs {
				t.Errorf("%s got a transaction of %d PDUs", s, fd.maxPDUs)
			}
			if !slices.Equal(fd.edus, []string{"m.typing", "m.receipt"}) {
				t.Errorf("%s got EDUs %v", s, fd.edus)
			}
		})
		waitFor(t, "the sender of "+s+" to end", func() bool {
			h := health(t, d, s)
			return !h.Active && h.Queued == 0
		})
		if h := health(t, d, s); h.LastSuccess.IsZero() || h.Failures != 0 || h.TxnsSent < 3 {
			t.Errorf("health of %s: %+v", s, h)
		}
	}
	// A user who is not in the room sends no EDUs.
	if err := e.SendTyping(context.Background(), roomID, "@nobody:hs.test", true); err == nil {
		t.Fatal("typing of a non-member was queued")
	}
}

// TestDelivery_RetriesSameTransaction: a destination answering errors for
// a while gets the same transaction ID and body until it answers, with
// growing backoff, then everything; per-PDU errors are counted, not
// retried.
func TestDelivery_RetriesSameTransaction(t *testing.T) {
	e := newEngine(t)
	net := newFakeNet("flaky.test")
	net.with("flaky.test", func(fd *fakeDest) {
		fd.plan = func(n int) error {
			if n < 4 {
				return errDown
			}
			return nil
		}
		fd.refuse = true
	})
	roomID := outboundRoom(t, e, "flaky.test")
	sendMessages(t, e, roomID, "r", 30)
	clock := newFakeClock()
	d := newDelivery(t, e.Store, net, clock)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	waitFor(t, "delivery after the errors", func() bool { return net.delivered("flaky.test") == 30 })
	waitFor(t, "the sender to end", func() bool { return !health(t, d, "flaky.test").Active })
	net.with("flaky.test", func(fd *fakeDest) {
		if len(fd.attempts) != 5 {
			t.Fatalf("%d attempts, want 4 failures and 1 success", len(fd.attempts))
		}
		for _, a := range fd.attempts[1:] {
			if a.txnID != fd.attempts[0].txnID || !bytes.Equal(a.body, fd.attempts[0].body) {
				t.Fatalf("retry %s differs from the first attempt %s", a.txnID, fd.attempts[0].txnID)
			}
		}
	})
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}
	if got := clock.Waits(); !slices.Equal(got, want) {
		t.Fatalf("backoff waits %v, want %v", got, want)
	}
	h := health(t, d, "flaky.test")
	if h.PDUErrors != 30 || h.TxnsSent != 1 || h.Failures != 0 || !h.BackoffUntil.IsZero() || h.LastFailure.IsZero() || h.LastError == "" {
		t.Fatalf("health %+v", h)
	}
}

// TestDelivery_BackoffSurvivesRestart: the failures and the backoff of a
// destination are in the store: a sender started on the reopened store
// waits out the stored backoff and keeps growing it.
func TestDelivery_BackoffSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ferry.db")
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t)
	e.Store = db
	roomID := outboundRoom(t, e, "down.test")
	sendMessages(t, e, roomID, "b", 3)

	net := newFakeNet("down.test")
	net.with("down.test", func(fd *fakeDest) {
		fd.plan = func(n int) error {
			if n == 3 {
				fd.block = true // the fifth attempt hangs until Close
			}
			return errDown
		}
	})
	clock := newFakeClock()
	d := newDelivery(t, db, net, clock)
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "four failures and a fifth attempt", func() bool {
		var hung int
		net.with("down.test", func(fd *fakeDest) { hung = fd.blocked })
		return hung == 1
	})
	d.Close()
	first := health(t, d, "down.test")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	waits := clock.Waits()
	if want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}; !slices.Equal(waits, want) {
		t.Fatalf("backoff waits %v, want %v", waits, want)
	}
	stored := waits[len(waits)-1]

	db, err = store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The new sender starts at the time of the last failure: the whole
	// stored backoff is ahead of it.
	clock2 := &fakeClock{now: first.BackoffUntil.Add(-stored)}
	net.with("down.test", func(fd *fakeDest) {
		fd.attempts = nil
		fd.block = false
		fd.plan = func(n int) error {
			if n == 0 {
				return errDown
			}
			return nil
		}
	})
	d2 := newDelivery(t, db, net, clock2)
	if err := d2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	waitFor(t, "delivery after the restart", func() bool { return net.delivered("down.test") == 3 })
	net.with("down.test", func(fd *fakeDest) {
		for _, a := range fd.attempts {
			if a.txnID != first.InFlightTxn {
				t.Fatalf("sent %s after the restart, want the transaction in flight %s", a.txnID, first.InFlightTxn)
			}
		}
	})
	got := clock2.Waits()
	if len(got) != 2 || got[0] != stored || got[1] != 2*stored {
		t.Fatalf("waits after the restart %v, want the stored backoff %v then twice it", got, stored)
	}
	waitFor(t, "the backoff to reset", func() bool {
		h := health(t, d2, "down.test")
		return h.Failures == 0 && h.BackoffUntil.IsZero() && h.Queued == 0
	})
}

// TestDelivery_DeadDestinationDoesNotDelayOthers: a destination whose
// requests hang does not hold up the others, and Close ends its sender.
func TestDelivery_DeadDestinationDoesNotDelayOthers(t *testing.T) {
	e := newEngine(t)
	net := newFakeNet("dead.test", "live1.test", "live2.test")
	net.with("dead.test", func(fd *fakeDest) { fd.block = true })
	d := newDelivery(t, e.Store, net, newFakeClock())
	e.OnQueued = func(dests []string) { d.Notify(dests...) }
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	roomID := outboundRoom(t, e, "dead.test", "live1.test", "live2.test")
	sendMessages(t, e, roomID, "d", 80)
	for _, s := range []string{"live1.test", "live2.test"} {
		waitFor(t, "delivery to "+s, func() bool { return net.delivered(s) == 80 })
	}
	if h := health(t, d, "dead.test"); !h.Active || h.Queued != 80 || h.InFlightTxn == "" {
		t.Fatalf("dead destination %+v", h)
	}
	d.Close()
}

// TestDelivery_CatchUp: after an outage with a long queue, only the
// newest queued event of each room goes; the rest leaves the queue.
func TestDelivery_CatchUp(t *testing.T) {
	e := newEngine(t)
	net := newFakeNet("late.test")
	net.with("late.test", func(fd *fakeDest) {
		fd.plan = func(n int) error {
			if n == 0 {
				return errDown
			}
			return nil
		}
	})
	room1 := outboundRoom(t, e, "late.test")
	room2 := outboundRoom(t, e, "late.test")
	sendMessages(t, e, room1, "one-", 60)
	sendMessages(t, e, room2, "two-", 40)
	d := newDelivery(t, e.Store, net, newFakeClock())
	d.CatchUpThreshold = 10
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	waitFor(t, "the queue to empty", func() bool {
		h := health(t, d, "late.test")
		return h.Queued == 0 && !h.Active
	})
	net.with("late.test", func(fd *fakeDest) {
		want := map[string]bool{"one-59": true, "two-39": true}
		for i := range 50 {
			want[fmt.Sprintf("one-%d", i)] = true // the transaction in flight during the outage
		}
		if len(fd.bodies) != len(want) {
			t.Fatalf("delivered %d messages, want %d", len(fd.bodies), len(want))
		}
		for b := range want {
			if !fd.bodies[b] {
				t.Fatalf("%s not delivered", b)
			}
		}
	})
	if h := health(t, d, "late.test"); h.CatchUps != 1 || h.Dropped != 48 {
		t.Fatalf("health %+v", h)
	}
}

// TestDelivery_ACLAndDenyList: servers denied by the room's ACL or by the
// deny list get nothing queued.
func TestDelivery_ACLAndDenyList(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	e.DestinationAllowed = func(s string) bool { return s != "denied.test" }
	roomID := outboundRoom(t, e, "ok.test", "banned.test", "denied.test")
	if _, err := e.SendEvent(ctx, roomID, homeserver.LocalEvent{
		Type: "m.room.server_acl", StateKey: new(string), Sender: alice,
		Content: map[string]any{"allow": []any{"*"}, "deny": []any{"banned.test"}},
	}); err != nil {
		t.Fatal(err)
	}
	sendMessages(t, e, roomID, "acl", 2)
	if err := e.SendTyping(ctx, roomID, alice, true); err != nil {
		t.Fatal(err)
	}
	dests, err := e.Store.PendingDestinations(ctx)
	if err != nil || !slices.Equal(dests, []string{"ok.test"}) {
		t.Fatalf("pending destinations %v, %v", dests, err)
	}
	st, err := e.Store.Destination(ctx, "ok.test")
	if err != nil || st.Pending != 4 {
		t.Fatalf("ok.test has %d queued (%v), want the ACL, 2 messages and the EDU", st.Pending, err)
	}
}

// stuckClock is a clock whose waits never end by themselves.
type stuckClock struct {
	fakeClock
}

func (c *stuckClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	return nil
}

// TestDelivery_SeenEndsBackoff: a request from a destination that is
// backing off ends its wait, and what is queued goes at once.
func TestDelivery_SeenEndsBackoff(t *testing.T) {
	e := newEngine(t)
	net := newFakeNet("back.test")
	net.with("back.test", func(fd *fakeDest) {
		fd.plan = func(n int) error {
			if n == 0 {
				return errDown
			}
			return nil
		}
	})
	roomID := outboundRoom(t, e, "back.test")
	sendMessages(t, e, roomID, "s", 5)
	clock := &stuckClock{fakeClock: *newFakeClock()}
	d := newDelivery(t, e.Store, net, &clock.fakeClock)
	d.After = clock.After
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	waitFor(t, "the sender to back off", func() bool { return len(clock.Waits()) == 1 })
	if h := health(t, d, "back.test"); h.Failures != 1 || h.BackoffUntil.IsZero() || h.TxnsSent != 0 {
		t.Fatalf("health while backing off %+v", h)
	}
	d.DestinationSeen("back.test")
	waitFor(t, "delivery once seen", func() bool { return net.delivered("back.test") == 5 })
	waitFor(t, "the backoff to reset", func() bool {
		h := health(t, d, "back.test")
		return h.Failures == 0 && h.BackoffUntil.IsZero() && !h.Active
	})
}

// retryLater is an answer asking the sender to wait.
type retryLater struct{ wait time.Duration }

func (r retryLater) Error() string             { return "destination answered 429" }
func (r retryLater) RetryAfter() time.Duration { return r.wait }

// TestDelivery_RetryAfter: a destination that asks for a wait longer than
// the backoff gets it.
func TestDelivery_RetryAfter(t *testing.T) {
	e := newEngine(t)
	net := newFakeNet("busy.test")
	net.with("busy.test", func(fd *fakeDest) {
		fd.plan = func(n int) error {
			if n == 0 {
				return retryLater{wait: 42 * time.Second}
			}
			return nil
		}
	})
	roomID := outboundRoom(t, e, "busy.test")
	sendMessages(t, e, roomID, "w", 2)
	clock := newFakeClock()
	d := newDelivery(t, e.Store, net, clock)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	waitFor(t, "delivery after the wait", func() bool { return net.delivered("busy.test") == 2 })
	if got := clock.Waits(); !slices.Equal(got, []time.Duration{42 * time.Second}) {
		t.Fatalf("waits %v, want the 42s asked for", got)
	}
}
