package fedtest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/store"
)

// roomVersions are the room versions every stress scenario runs in:
// version 10 resolves state with v2, version 12 with v2.1 and makes
// creators all-powerful.
var roomVersions = []string{"10", "12"}

// stressRoom is a room of a cluster: node i's anchor user (admin, never
// kicked or banned, so every server stays in the room and keeps
// receiving) and guest user (power 0, the one kicked, banned, rejoined).
type stressRoom struct {
	ID      string
	Version string
	// Anchors and Guests by node index.
	Anchors, Guests []string
	// Creator is node 0's anchor, the room's creator.
	Creator string
}

// anchorName and guestName name node i's users.
func anchorName(i int) string { return []string{"alice", "bob", "carol", "dave", "erin", "frank"}[i%6] }
func guestName(i int) string  { return []string{"amy", "ben", "cid", "dot", "eve", "fay"}[i%6] }

// SetupRoom creates a public room on node 0 and joins every node's anchor
// and guest; node 0's anchor then raises every other anchor to power 100.
// When it returns every node holds the whole setup and the room's
// baseline is set.
func (c *cluster) SetupRoom(version string) *stressRoom {
	c.t.Helper()
	ctx := testContext(c.t)
	r := &stressRoom{Version: version}
	for i, n := range c.Nodes {
		r.Anchors = append(r.Anchors, n.User(anchorName(i)))
		r.Guests = append(r.Guests, n.User(guestName(i)))
	}
	r.Creator = r.Anchors[0]
	a := c.Nodes[0]
	id, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: r.Creator, Version: version, Preset: homeserver.PresetPublicChat})
	if err != nil {
		c.Fatalf("create room: %v", err)
	}
	r.ID = id
	// Anchors first, so that every server is in the room before the
	// guests join: the guests' joins then reach every server as events,
	// not as state from a later join.
	var setup []string
	for _, users := range [][]string{r.Anchors, r.Guests} {
		for i, n := range c.Nodes {
			if users[i] == r.Creator {
				continue
			}
			ev, err := n.Engine.JoinRoom(ctx, id, users[i], []string{a.Name})
			if err != nil {
				c.Fatalf("%s joins: %v", users[i], err)
			}
			if users[0] != r.Creator {
				setup = append(setup, ev.EventID())
			}
		}
		c.WaitMembers(id, r.Anchors)
	}
	pl := c.PowerLevels(a, r)
	users := pl["users"].(map[string]any)
	for _, anchor := range r.Anchors[1:] {
		users[anchor] = 100
	}
	setup = append(setup, c.SetState(a, id, r.Creator, "m.room.power_levels", "", pl))
	c.WaitAll(func() []string { return setup })
	requireSameState(c.t, id, c.Nodes...)
	c.Baseline(id)
	return r
}

// WaitMembers waits until every node counts the users as joined.
func (c *cluster) WaitMembers(roomID string, users []string) {
	c.t.Helper()
	deadline := time.Now().Add(2 * waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		missing := ""
		for _, n := range c.Nodes {
			for _, u := range users {
				if missing == "" && n.membership(c.t, roomID, u) != "join" {
					missing = n.Name + " does not count " + u
				}
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			c.Fatalf("room %s: %s as joined", roomID, missing)
		}
		<-tick.C
	}
}

// WaitRefused waits until the network has stopped a request from `from`
// to each of the nodes `to`: a partition is known to hold once both
// sides have tried to cross it.
func (c *cluster) WaitRefused(from *node, to ...*node) {
	c.t.Helper()
	deadline := time.Now().Add(2 * waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for _, n := range to {
		for c.Net.Refused(from.Name, n.Name) == 0 {
			if time.Now().After(deadline) {
				c.Fatalf("no request from %s to %s was stopped", from.Name, n.Name)
			}
			<-tick.C
		}
	}
}

// WaitQueueEmpty waits until from has nothing queued for to.
func (c *cluster) WaitQueueEmpty(from, to *node) {
	c.t.Helper()
	deadline := time.Now().Add(2 * waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		dests, err := from.DB.PendingDestinations(testContext(c.t))
		if err != nil {
			c.Fatalf("%s: pending destinations: %v", from.Name, err)
		}
		if !slices.Contains(dests, to.Name) {
			return
		}
		if time.Now().After(deadline) {
			c.Fatalf("%s still has events queued for %s", from.Name, to.Name)
		}
		<-tick.C
	}
}

// Speakers are the anchors by node, for Converge.
func (r *stressRoom) Speakers(nodes []*node) map[*node]string {
	out := map[*node]string{}
	for i, n := range nodes {
		out[n] = r.Anchors[i]
	}
	return out
}

// PowerLevels returns a copy of the room's current power levels content
// on a node, with a users map, ready to edit and send.
func (c *cluster) PowerLevels(n *node, r *stressRoom) map[string]any {
	c.t.Helper()
	content := c.StateContent(n, r.ID, "m.room.power_levels", "")
	if content == nil {
		c.Fatalf("%s: room %s has no power levels", n.Name, r.ID)
	}
	users, _ := content["users"].(map[string]any)
	content["users"] = maps.Clone(users)
	if content["users"] == nil {
		content["users"] = map[string]any{}
	}
	return content
}

// StateContent returns a copy of the content of a current state event on
// a node, nil when there is none.
func (c *cluster) StateContent(n *node, roomID, typ, stateKey string) map[string]any {
	c.t.Helper()
	se := c.StateEvent(n, roomID, typ, stateKey)
	if se == nil {
		return nil
	}
	return maps.Clone(se.Event.Content())
}

// StateEvent returns a current state event on a node, nil when there is
// none.
func (c *cluster) StateEvent(n *node, roomID, typ, stateKey string) *store.StoredEvent {
	c.t.Helper()
	ctx := testContext(c.t)
	id, err := n.DB.CurrentStateEvent(ctx, roomID, store.StateKey{Type: typ, StateKey: stateKey})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		c.Fatalf("%s: current %s: %v", n.Name, typ, err)
	}
	se, err := n.DB.Event(ctx, id)
	if err != nil {
		c.Fatalf("%s: event %s: %v", n.Name, id, err)
	}
	return se
}

// powerOf reads a user's level from power levels content, whatever
// numeric type the content was decoded with.
func powerOf(content map[string]any, userID string) float64 {
	users, _ := content["users"].(map[string]any)
	if v, ok := users[userID]; ok {
		return number(v)
	}
	return number(content["users_default"])
}

func number(v any) float64 {
	f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
	if err != nil {
		return 0
	}
	return f
}

// forEachVersion runs a scenario as a parallel subtest per room version.
func forEachVersion(t *testing.T, scenario func(t *testing.T, version string)) {
	for _, version := range roomVersions {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			scenario(t, version)
		})
	}
}

// sides names the nodes of a partition for messages.
func sides(groups ...[]*node) string {
	var parts []string
	for _, g := range groups {
		var names []string
		for _, n := range g {
			names = append(names, n.Name)
		}
		parts = append(parts, "{"+strings.Join(names, ", ")+"}")
	}
	return strings.Join(parts, " | ")
}
