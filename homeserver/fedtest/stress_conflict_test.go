package fedtest

import (
	"cmp"
	"fmt"
	"testing"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
)

// TestStressConflictingState: the classic races, each made concurrent by
// a partition that heals before the servers compare, in v10 and v12.
// Each asserts the outcome the state resolution algorithm dictates where
// it is determined, and convergence (same state, same graph, host logs)
// everywhere.
func TestStressConflictingState(t *testing.T) {
	t.Parallel()
	forEachVersion(t, func(t *testing.T, version string) {
		c := newCluster(t, 3)
		t.Run("admins demote each other", func(t *testing.T) { c.t = t; raceAdmins(c, version) })
		t.Run("ban races a demotion", func(t *testing.T) { c.t = t; raceBanDemotion(c, version) })
		t.Run("join races invite-only", func(t *testing.T) { c.t = t; raceJoinRule(c, version) })
		t.Run("kick races the target's message", func(t *testing.T) { c.t = t; raceKickMessage(c, version) })
	})
}

// raceAdmins: two admins of equal power (bob on B, carol on C, 100 each)
// cannot demote each other at all: the rules refuse changing the level of
// a user as powerful as the sender, and Ferry refuses to send either
// event. Their concurrent power level edits (each promoting their own
// guest) are both valid; state resolution applies power events of equal
// sender power in (origin_server_ts, event ID) order, so the later edit
// replaces the earlier one wholesale.
func raceAdmins(c *cluster, version string) {
	a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	r := c.SetupRoom(version)
	bob, carol, ben, cid := r.Anchors[1], r.Anchors[2], r.Guests[1], r.Guests[2]
	ctx := testContext(c.t)

	for _, try := range []struct {
		n              *node
		sender, target string
	}{{b, bob, carol}, {cc, carol, bob}} {
		pl := c.PowerLevels(try.n, r)
		pl["users"].(map[string]any)[try.target] = 0
		if _, err := try.n.Engine.SendEvent(ctx, r.ID, homeserver.LocalEvent{Type: "m.room.power_levels", StateKey: rooms.StringPtr(""), Sender: try.sender, Content: pl}); err == nil {
			c.Fatalf("%s demoted %s, an admin of equal power", try.sender, try.target)
		}
	}

	c.Net.Partition([]*node{b}, []*node{a, cc})
	plB := c.PowerLevels(b, r)
	plB["users"].(map[string]any)[ben] = 50
	fromB := c.SetState(b, r.ID, bob, "m.room.power_levels", "", plB)
	plC := c.PowerLevels(cc, r)
	plC["users"].(map[string]any)[cid] = 50
	fromC := c.SetState(cc, r.ID, carol, "m.room.power_levels", "", plC)
	c.WaitRefused(b, cc)
	c.WaitRefused(cc, b)
	c.Net.Heal()
	c.Converge(r.ID, r.Speakers(c.Nodes))

	winner, loser := laterOf(c, b, fromB, cc, fromC)
	for _, n := range c.Nodes {
		if got := c.StateEvent(n, r.ID, "m.room.power_levels", "").Event.EventID(); got != winner {
			c.Fatalf("%s: power levels %s, want the later edit %s (the earlier is %s)", n.Name, got, winner, loser)
		}
	}
}

// laterOf returns the event applied last by state resolution among two
// power events of senders of equal power: the greater (origin_server_ts,
// event ID); then the other.
func laterOf(c *cluster, n1 *node, id1 string, n2 *node, id2 string) (string, string) {
	e1 := c.event(n1, id1)
	e2 := c.event(n2, id2)
	if cmp.Or(cmp.Compare(e1.OriginServerTS(), e2.OriginServerTS()), cmp.Compare(id1, id2)) > 0 {
		return id1, id2
	}
	return id2, id1
}

func (c *cluster) event(n *node, id string) *rooms.Event {
	c.t.Helper()
	se, err := n.DB.Event(testContext(c.t), id)
	if err != nil {
		c.Fatalf("%s: event %s: %v", n.Name, id, err)
	}
	return se.Event
}

// raceBanDemotion: ben (B's guest) is a moderator (50); while {A} is cut
// from {B, C}, alice (100, the creator) demotes him to 0 and he bans cid.
// State resolution applies the power events of the more powerful sender
// first: the demotion, after which the ban is no longer allowed, so cid
// stays joined, in both versions (in v12 the creator's power is
// infinite, which orders it first all the more).
func raceBanDemotion(c *cluster, version string) {
	a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	r := c.SetupRoom(version)
	alice, ben, cid := r.Anchors[0], r.Guests[1], r.Guests[2]
	pl := c.PowerLevels(a, r)
	pl["users"].(map[string]any)[ben] = 50
	promote := c.SetState(a, r.ID, alice, "m.room.power_levels", "", pl)
	c.WaitAll(func() []string { return []string{promote} })

	c.Net.Partition([]*node{a}, []*node{b, cc})
	pl = c.PowerLevels(a, r)
	pl["users"].(map[string]any)[ben] = 0
	demotion := c.SetState(a, r.ID, alice, "m.room.power_levels", "", pl)
	ban := c.SetState(b, r.ID, ben, "m.room.member", cid, map[string]any{"membership": "ban"})
	c.WaitRefused(a, b)
	c.WaitRefused(b, a)
	c.Net.Heal()
	c.Converge(r.ID, r.Speakers(c.Nodes))

	for _, n := range c.Nodes {
		if got := c.StateEvent(n, r.ID, "m.room.power_levels", "").Event.EventID(); got != demotion {
			c.Fatalf("%s: power levels %s, want the demotion %s", n.Name, got, demotion)
		}
		if m := n.membership(c.t, r.ID, cid); m != "join" {
			c.Fatalf("%s: cid's membership is %q, want join (the ban %s lost to the demotion)", n.Name, m, ban)
		}
	}
}

// raceJoinRule: while {A} is cut from {B, C}, alice makes the room
// invite-only and a new user of C joins it (public on C's side). The join
// rule is a power event, resolved before the join, which it then does not
// allow: the newcomer is not in the room anywhere.
func raceJoinRule(c *cluster, version string) {
	a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	r := c.SetupRoom(version)
	alice := r.Anchors[0]
	newcomer := cc.User("cy")

	c.Net.Partition([]*node{a}, []*node{b, cc})
	c.SetState(a, r.ID, alice, "m.room.join_rules", "", map[string]any{"join_rule": "invite"})
	join, err := cc.Engine.JoinRoom(testContext(c.t), r.ID, newcomer, nil)
	if err != nil {
		c.Fatalf("%s joins on its side: %v", newcomer, err)
	}
	c.Record(r.ID, join.EventID())
	c.WaitRefused(a, cc)
	c.WaitRefused(cc, a)
	c.Net.Heal()
	c.Converge(r.ID, r.Speakers(c.Nodes))

	for _, n := range c.Nodes {
		if m := n.membership(c.t, r.ID, newcomer); m == "join" {
			c.Fatalf("%s: %s is joined; the invite-only rule should have won", n.Name, newcomer)
		}
		if jr := c.StateContent(n, r.ID, "m.room.join_rules", "")["join_rule"]; jr != "invite" {
			c.Fatalf("%s: join rule %v, want invite", n.Name, jr)
		}
	}
}

// raceKickMessage: while {A} is cut from {B, C}, alice kicks ben and ben,
// who does not know, keeps talking. After the heal ben is out
// everywhere; his messages are in every server's graph (they were
// allowed by the state they were sent in), accepted by B and C, which
// saw them before the kick, and soft-failed by A, whose current state had
// him kicked when they arrived, so A's host never sees them.
func raceKickMessage(c *cluster, version string) {
	a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	r := c.SetupRoom(version)
	alice, ben := r.Anchors[0], r.Guests[1]

	c.Net.Partition([]*node{a}, []*node{b, cc})
	c.SetState(a, r.ID, alice, "m.room.member", ben, map[string]any{"membership": "leave", "reason": "kicked"})
	var said []string
	for i := range 1 + c.Rand.IntN(4) {
		said = append(said, c.Say(b, r.ID, ben, fmt.Sprintf("ben, unaware, %d", i)))
	}
	// C takes ben's messages in before the kick reaches it.
	c.WaitOn([]*node{cc}, said)
	c.WaitRefused(a, b)
	c.WaitRefused(b, a)
	c.Net.Heal()
	c.Converge(r.ID, r.Speakers(c.Nodes))

	ctx := testContext(c.t)
	for _, n := range c.Nodes {
		if m := n.membership(c.t, r.ID, ben); m != "leave" {
			c.Fatalf("%s: ben's membership is %q, want leave", n.Name, m)
		}
		evs, err := n.DB.Events(ctx, said)
		if err != nil {
			c.Fatalf("%s: events: %v", n.Name, err)
		}
		for _, se := range evs {
			if want := n == a; se.SoftFailed != want {
				c.Fatalf("%s: ben's message %s soft-failed=%v, want %v", n.Name, se.Event.EventID(), se.SoftFailed, want)
			}
		}
	}
}
