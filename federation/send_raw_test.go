package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store/storetest"
)

// The client is the outbound delivery's transport, and its errors carry
// the wait a destination asks for.
var (
	_ homeserver.Transport                    = (*Client)(nil)
	_ interface{ RetryAfter() time.Duration } = (*HTTPError)(nil)
)

// receiverRooms is the RoomHandler of a scripted receiver: it fails the
// first transactions with a 500 while fail is positive, records every
// transaction ID it is sent, and keeps the body of every message PDU, or,
// when arrived is set (benchmarks), only counts them there.
type receiverRooms struct {
	*scriptedRooms
	fail    atomic.Int32
	arrived chan<- int // when set, the PDUs of each accepted transaction

	mu     sync.Mutex
	txnIDs []string
	bodies map[string]bool
}

func newReceiverRooms() *receiverRooms {
	return &receiverRooms{scriptedRooms: newScriptedRooms(), bodies: map[string]bool{}}
}

func (r *receiverRooms) TransactionResponse(_ context.Context, _ string, txnID string) ([]byte, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.txnIDs = append(r.txnIDs, txnID)
	return nil, false, nil
}

func (r *receiverRooms) ReceivePDUs(_ context.Context, _ string, pdus [][]byte) map[string]error {
	if r.fail.Load() > 0 {
		r.fail.Add(-1)
		return map[string]error{"$any": ourFault{}}
	}
	if r.arrived != nil {
		// A benchmark's receiver counts what arrives and reads nothing:
		// decoding every PDU here would be the harness's CPU, not the
		// sender's, on the same two cores.
		r.arrived <- len(pdus)
		return map[string]error{}
	}
	r.mu.Lock()
	for _, raw := range pdus {
		var pdu struct {
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &pdu) == nil && pdu.Content.Body != "" {
			r.bodies[pdu.Content.Body] = true
		}
	}
	r.mu.Unlock()
	return map[string]error{}
}

func (r *receiverRooms) received() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

// deliveryWorld is a Ferry server with outbound delivery over the real
// client, and receivers joined to one of its rooms, all on loopback TLS.
type deliveryWorld struct {
	pki       *testPKI
	ferry     *ferryNode
	delivery  *homeserver.Delivery
	roomID    string
	receivers []*receiverRooms
}

func newDeliveryWorld(t testing.TB, receivers int, arrived chan<- int) *deliveryWorld {
	t.Helper()
	w := newIdleDeliveryWorld(t, receivers, arrived)
	w.start(t)
	return w
}

// start starts the delivery: what was queued before goes now.
func (w *deliveryWorld) start(t testing.TB) {
	t.Helper()
	if err := w.delivery.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.delivery.Close)
}

// newIdleDeliveryWorld is newDeliveryWorld with the delivery not started:
// events are queued, not sent.
func newIdleDeliveryWorld(t testing.TB, receivers int, arrived chan<- int) *deliveryWorld {
	t.Helper()
	ctx := context.Background()
	pki := newTestPKI(t)
	n := newRoomNode(t, pki, "ferry.test", 41)
	db := storetest.Open(t)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	d := &homeserver.Delivery{
		ServerName: "ferry.test", Store: db, Transport: n.client, Logger: log,
		BackoffBase: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
	}
	eng := &homeserver.Engine{
		ServerName: "ferry.test", Signer: n.signer, Store: db, Keys: n.ring, Remote: n.client, Logger: log,
		OnQueued: func(dests []string) { d.Notify(dests...) },
	}
	n.start(t, pki, eng)
	w := &deliveryWorld{pki: pki, ferry: &ferryNode{roomNode: n, db: db, engine: eng}, delivery: d}
	roomID, err := eng.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: "@alice:ferry.test", Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	w.roomID = roomID
	for i := range receivers {
		name := fmt.Sprintf("r%d.test", i)
		rn := newRoomNode(t, pki, name, byte(100+i))
		rr := newReceiverRooms()
		rr.arrived = arrived
		rn.start(t, pki, rr)
		linkNodes(n, rn)
		room := newRemoteRoom(t, rn, w.ferry, roomID)
		user := "@u:" + name
		join := room.build(eventSpec{typ: "m.room.member", stateKey: rooms.StringPtr(user), sender: user, content: map[string]any{"membership": "join"}})
		if res := room.send("join", join); res[join.EventID()] != "" {
			t.Fatalf("join of %s: %s", user, res[join.EventID()])
		}
		w.receivers = append(w.receivers, rr)
	}
	return w
}

func (w *deliveryWorld) send(t testing.TB, body string) {
	t.Helper()
	if _, err := w.ferry.engine.SendEvent(context.Background(), w.roomID, homeserver.LocalEvent{
		Type: "m.room.message", Sender: "@alice:ferry.test", Content: map[string]any{"body": body},
	}); err != nil {
		t.Fatal(err)
	}
}

// TestDelivery_OverTLS: events sent in a room reach every receiver over
// the real client; a receiver answering 500 for a while gets the same
// transaction ID again until it answers, then everything.
func TestDelivery_OverTLS(t *testing.T) {
	w := newDeliveryWorld(t, 3, nil)
	flaky := w.receivers[1]
	flaky.fail.Store(3)
	for i := range 70 {
		w.send(t, fmt.Sprintf("m%d", i))
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range w.receivers {
		for r.received() < 70 {
			if time.Now().After(deadline) {
				t.Fatalf("a receiver has %d of 70 messages", r.received())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	flaky.mu.Lock()
	ids := append([]string(nil), flaky.txnIDs...)
	flaky.mu.Unlock()
	if len(ids) < 4 || ids[0] != ids[1] || ids[1] != ids[2] || ids[2] != ids[3] {
		t.Fatalf("transaction IDs %v, want the first one sent 4 times (3 failures, then the answer)", ids)
	}
	steady := w.receivers[0]
	steady.mu.Lock()
	seen := map[string]bool{}
	for _, id := range steady.txnIDs {
		if seen[id] {
			t.Errorf("transaction %s sent twice to a receiver that answered", id)
		}
		seen[id] = true
	}
	steady.mu.Unlock()
	health, err := w.delivery.Health(context.Background())
	if err != nil || len(health) != 3 {
		t.Fatalf("health %+v, %v", health, err)
	}
	if h := health[1]; h.Name != "r1.test" || h.LastFailure.IsZero() || h.LastError == "" {
		t.Fatalf("health of the flaky receiver %+v", h)
	}
}

// BenchmarkDelivery_FanOut100 sends one event in a room with 100
// receiving servers and reports the time until the last one has it.
func BenchmarkDelivery_FanOut100(b *testing.B) {
	const servers = 100
	arrived := make(chan int, servers)
	w := newDeliveryWorld(b, servers, arrived)
	var worst time.Duration
	for i := 0; b.Loop(); i++ {
		worst = max(worst, w.sendAwaited(b, fmt.Sprintf("fan-%d", i), arrived, servers))
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "ms-worst-last-delivery")
}

// sendAwaited sends one event and returns the time until n receivers
// counting on arrived have had it.
func (w *deliveryWorld) sendAwaited(b *testing.B, body string, arrived <-chan int, n int) time.Duration {
	b.Helper()
	start := time.Now()
	w.send(b, body)
	for range n {
		<-arrived
	}
	return time.Since(start)
}

// BenchmarkDelivery_10kEvents10Servers sends 10,000 events in a room with
// 10 receiving servers and reports the time until the last one has them
// all.
func BenchmarkDelivery_10kEvents10Servers(b *testing.B) {
	const servers, events = 10, 10000
	arrived := make(chan int, 1024)
	w := newDeliveryWorld(b, servers, arrived)
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			for got := 0; got < servers*events; {
				got += <-arrived
			}
		}()
		for j := range events {
			w.send(b, fmt.Sprintf("bulk-%d-%d", i, j))
		}
		sent := time.Since(start)
		<-done
		b.ReportMetric(sent.Seconds(), "s-to-send")
		b.ReportMetric(time.Since(start).Seconds(), "s-to-last-delivery")
	}
	b.ReportMetric(float64(w.transactions())/float64(servers*b.N), "txns/receiver")
}

// transactions counts the transactions the receivers were sent.
func (w *deliveryWorld) transactions() int {
	n := 0
	for _, r := range w.receivers {
		r.mu.Lock()
		n += len(r.txnIDs)
		r.mu.Unlock()
	}
	return n
}

// BenchmarkDelivery_10kQueued10Servers queues 10,000 events in a room with
// 10 receiving servers before the delivery starts, and reports the time
// from its start until the last receiver has them all: the delivery's
// throughput without the cost of creating the events.
func BenchmarkDelivery_10kQueued10Servers(b *testing.B) {
	const servers, events = 10, 10000
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		arrived := make(chan int, 1024)
		w := newIdleDeliveryWorld(b, servers, arrived)
		queueing := time.Now()
		for j := range events {
			w.send(b, fmt.Sprintf("queued-%d-%d", i, j))
		}
		b.ReportMetric(time.Since(queueing).Seconds(), "s-to-send-undelivered")
		b.StartTimer()
		start := time.Now()
		w.start(b)
		for got := 0; got < servers*events; {
			got += <-arrived
		}
		b.ReportMetric(time.Since(start).Seconds(), "s-to-last-delivery")
	}
}
