package fedtest

import (
	"fmt"
	"testing"

	"github.com/ferry-matrix/ferry/homeserver"
)

// TestStressPartitionHeals: a room on A, B and C; the network between
// {A} and {B, C} is cut both ways (transactions and pulls refused); both
// sides talk and change state (topic, power levels, a kick, a ban, the
// join rules); the partition heals and all three servers converge: the
// same current state, the same events in their graphs, each host log
// showing each accepted event once. The outcome of the moderation that
// nobody contested is checked too.
func TestStressPartitionHeals(t *testing.T) {
	t.Parallel()
	forEachVersion(t, func(t *testing.T, version string) {
		c := newCluster(t, 3)
		a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
		r := c.SetupRoom(version)
		alice, bob, carol := r.Anchors[0], r.Anchors[1], r.Anchors[2]
		amy, ben, cid := r.Guests[0], r.Guests[1], r.Guests[2]

		c.Net.Partition([]*node{a}, []*node{b, cc})
		t.Logf("partition %s", sides([]*node{a}, []*node{b, cc}))
		talk := func(n *node, sender string, count int) {
			for i := range count {
				c.Say(n, r.ID, sender, fmt.Sprintf("%s during the partition %d", sender, i))
			}
		}
		// A's side: topic, a kick of B's guest, power to C's guest, the
		// join rule to invite.
		talk(a, alice, 1+c.Rand.IntN(5))
		c.SetState(a, r.ID, alice, "m.room.topic", "", map[string]any{"topic": "A's topic"})
		c.SetState(a, r.ID, alice, "m.room.member", ben, map[string]any{"membership": "leave", "reason": "kicked on A's side"})
		pl := c.PowerLevels(a, r)
		pl["users"].(map[string]any)[cid] = 10
		c.SetState(a, r.ID, alice, "m.room.power_levels", "", pl)
		talk(a, amy, 1+c.Rand.IntN(5))
		c.SetState(a, r.ID, alice, "m.room.join_rules", "", map[string]any{"join_rule": "invite"})

		// B and C's side: another topic, a ban of A's guest, B's guest
		// still talking (it does not know it was kicked).
		talk(b, bob, 1+c.Rand.IntN(5))
		c.SetState(b, r.ID, bob, "m.room.member", amy, map[string]any{"membership": "ban", "reason": "banned on B's side"})
		talk(b, ben, 1+c.Rand.IntN(5))
		talk(cc, carol, 1+c.Rand.IntN(5))
		c.SetState(cc, r.ID, carol, "m.room.topic", "", map[string]any{"topic": "C's topic"})
		talk(cc, cid, 1+c.Rand.IntN(3))

		// The cut holds both ways before it heals: each side's delivery
		// has tried and been refused.
		c.WaitRefused(a, b, cc)
		c.WaitRefused(b, a)
		c.WaitRefused(cc, a)
		c.Net.Heal()
		c.Converge(r.ID, r.Speakers(c.Nodes))

		// Nobody contested the kick, the ban, the join rule or cid's
		// power: they hold everywhere.
		for _, n := range c.Nodes {
			if m := n.membership(t, r.ID, ben); m != "leave" {
				c.Fatalf("%s: ben's membership is %q, want leave", n.Name, m)
			}
			if m := n.membership(t, r.ID, amy); m != "ban" {
				c.Fatalf("%s: amy's membership is %q, want ban", n.Name, m)
			}
			if jr := c.StateContent(n, r.ID, "m.room.join_rules", "")["join_rule"]; jr != "invite" {
				c.Fatalf("%s: join rule %v, want invite", n.Name, jr)
			}
			if p := powerOf(c.PowerLevels(n, r), cid); p != 10 {
				c.Fatalf("%s: cid's power is %v, want 10", n.Name, p)
			}
		}
	})
}

// TestStressGapOnlyBackfillBridges: C is cut from A only; A says a word
// that reaches B; then B's server answers everyone with garbage while B
// keeps talking on top of A's word. C, lacking A's word, asks B (the
// origin) for what is missing, gets garbage and drops each of B's events:
// a dropped PDU is not sent again. After the heal B says more; C fetches
// the last events with one bounded /get_missing_events, bridges the rest
// with the state before them, and so holds a gap, which the protocol
// allows. The convergence check must then backfill the gap on C and still
// find the same state, the same graph and the host logs right.
func TestStressGapOnlyBackfillBridges(t *testing.T) {
	t.Parallel()
	forEachVersion(t, func(t *testing.T, version string) {
		c := newCluster(t, 3)
		a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
		r := c.SetupRoom(version)
		alice, bob := r.Anchors[0], r.Anchors[1]

		c.Net.Partition([]*node{a}, []*node{cc})
		word := c.Say(a, r.ID, alice, "C will not hear this")
		c.WaitOn([]*node{b}, []string{word})
		c.Net.Break(b, garbage)
		for i := range homeserver.DefaultMissingEventsLimit + 5 + c.Rand.IntN(10) {
			c.Say(b, r.ID, bob, fmt.Sprintf("on top of A's word %d", i))
		}
		// B's queue for C drains: C answered each transaction, dropping
		// B's events for want of A's word.
		c.WaitQueueEmpty(b, cc)
		c.Net.Heal()
		for i := range homeserver.DefaultMissingEventsLimit + 5 {
			c.Say(b, r.ID, bob, fmt.Sprintf("after the heal %d", i))
		}
		conv := c.Converge(r.ID, r.Speakers(c.Nodes))
		if conv.Backfilled == 0 {
			c.Fatalf("C held every event without backfill: the scenario made no gap")
		}
	})
}
