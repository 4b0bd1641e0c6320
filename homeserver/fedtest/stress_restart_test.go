package fedtest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/ferry-matrix/ferry/homeserver"
)

// TestStressRestart: A and B send bursts at once; B is killed in the
// middle of its burst (listener and connections cut, the store closed
// under requests in progress, the engine's memory dropped) and started
// again on its data directory; later C is restarted gracefully while A
// still talks. Every event any sender was told was sent, and every event
// a host log showed, ends on every server, the three agree on the state,
// and no host log shows an event twice.
func TestStressRestart(t *testing.T) {
	t.Parallel()
	forEachVersion(t, func(t *testing.T, version string) {
		c := newCluster(t, 3)
		a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
		r := c.SetupRoom(version)
		alice, bob := r.Anchors[0], r.Anchors[1]
		const burst = 40
		crashAfter := 5 + c.Rand.IntN(burst-10)
		t.Logf("B crashes after %d of its messages", crashAfter)

		var wg sync.WaitGroup
		var aErr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range burst {
				if _, err := c.Send(a, r.ID, message(alice, fmt.Sprintf("A's burst %d", i))); err != nil {
					aErr = err
					return
				}
			}
		}()
		// B's sender holds the engine of B's first life: once B is
		// killed its sends fail, and what it was told before stands.
		engine := b.Engine
		crash := make(chan struct{})
		bDone := make(chan int)
		go func() {
			acked := 0
			defer func() { bDone <- acked }()
			// B keeps sending until it dies, so the crash always lands
			// in the middle of its burst.
			for i := range 100 * burst {
				if i == crashAfter {
					close(crash)
				}
				ev, err := engine.SendEvent(t.Context(), r.ID, message(bob, fmt.Sprintf("B's burst %d", i)))
				if err != nil {
					if i < crashAfter {
						t.Errorf("B's send %d before the crash: %v", i, err)
					}
					return
				}
				c.Record(r.ID, ev.EventID())
				acked++
			}
		}()
		<-crash
		b.stop(true)
		acked := <-bDone
		t.Logf("B acknowledged %d messages before it died", acked)
		if err := b.start(t, nil); err != nil {
			c.Fatalf("restart B: %v", err)
		}
		c.Say(b, r.ID, bob, "B is back")

		cc.Restart(t, false)
		wg.Wait()
		if aErr != nil {
			c.Fatalf("A's burst: %v", aErr)
		}
		c.Converge(r.ID, r.Speakers(c.Nodes))
	})
}

// message is a text message from sender.
func message(sender, body string) homeserver.LocalEvent {
	return homeserver.LocalEvent{Type: "m.room.message", Sender: sender, Content: map[string]any{"msgtype": "m.text", "body": body}}
}
