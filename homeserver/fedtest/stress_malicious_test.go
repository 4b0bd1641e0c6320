package fedtest

import (
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// mallory is a broken or malicious peer: a real Ferry node (so its keys
// are served and its join is genuine) that does not deliver on its own.
// What its engine sends stays queued, withheld; the test hands chosen
// events, or crafted ones, to the honest servers itself.
type mallory struct {
	*node
	User string
	c    *cluster
	room *stressRoom
	v    rooms.Version
	txn  int
}

// joinMallory starts mallory behind the cluster's network and joins it to
// the room through node 0; it returns once every honest server counts it
// in.
func joinMallory(c *cluster, r *stressRoom) *mallory {
	c.t.Helper()
	// Its requests outlast the honest servers' fetch timeout, so that
	// their answer to a transaction they had to give up on arrives.
	n := startNodeOpts(c.t, nodeOptions{Net: c.Net, RequestTimeout: 20 * time.Second})
	m := &mallory{node: n, User: n.User("mallory"), c: c, room: r}
	join, err := n.Engine.JoinRoom(testContext(c.t), r.ID, m.User, []string{c.Nodes[0].Name})
	if err != nil {
		c.Fatalf("mallory joins: %v", err)
	}
	c.Record(r.ID, join.EventID())
	c.WaitMembers(r.ID, []string{m.User})
	m.v = mustVersion(c.t, r.ID, n)
	return m
}

// craft builds an event of mallory's on its current view of the room
// (prev events: its forward extremities; auth events: the selection from
// its current state), edited by edit, signed with key.
func (m *mallory) craft(key rooms.SigningKey, edit func(*rooms.EventTemplate)) *rooms.Event {
	m.c.t.Helper()
	ctx := testContext(m.c.t)
	prevs, err := m.DB.ForwardExtremities(ctx, m.room.ID)
	if err != nil {
		m.c.Fatalf("mallory's extremities: %v", err)
	}
	var depth int64
	for _, id := range prevs {
		depth = max(depth, m.c.event(m.node, id).Depth()+1)
	}
	tmpl := rooms.EventTemplate{
		Type: "m.room.message", Sender: m.User, RoomID: m.room.ID,
		Content:    map[string]any{"msgtype": "m.text", "body": "crafted"},
		PrevEvents: prevs, Depth: depth, OriginServerTS: time.Now().UnixMilli(),
	}
	if edit != nil {
		edit(&tmpl)
	}
	if tmpl.AuthEvents == nil {
		state := m.CurrentState(m.c.t, tmpl.RoomID)
		for _, tuple := range rooms.AuthSelectionFor(m.v, tmpl) {
			if id, ok := state[store.StateKey(tuple)]; ok {
				tmpl.AuthEvents = append(tmpl.AuthEvents, id)
			}
		}
	}
	ev, err := rooms.BuildEvent(m.v, tmpl, key)
	if err != nil {
		m.c.Fatalf("craft: %v", err)
	}
	return ev
}

// fakeEventID returns a well-formed event ID of no event.
func fakeEventID(c *cluster) string {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(c.Rand.UintN(256))
	}
	return "$" + base64.RawURLEncoding.EncodeToString(b)
}

// memberEvent is a membership (join) refresh of user with a new display
// name.
func memberEvent(user, name string) homeserver.LocalEvent {
	return homeserver.LocalEvent{Type: "m.room.member", StateKey: rooms.StringPtr(user), Sender: user, Content: map[string]any{"membership": "join", "displayname": name}}
}

// key is mallory's real signing key.
func (m *mallory) key() rooms.SigningKey { return m.Own.Signer(m.Name) }

// withheld sends a message through mallory's engine, which keeps it
// queued: a genuine event nobody else has.
func (m *mallory) withheld(body string) *rooms.Event {
	m.c.t.Helper()
	ev, err := m.Engine.SendEvent(testContext(m.c.t), m.room.ID, message(m.User, body))
	if err != nil {
		m.c.Fatalf("mallory sends: %v", err)
	}
	return ev
}

// send hands PDUs to server in one transaction and returns the answer.
func (m *mallory) send(to *node, evs ...*rooms.Event) (map[string]string, error) {
	raw := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		raw[i] = ev.JSON()
	}
	m.txn++
	ctx := testContext(m.c.t)
	return m.Client.SendTransaction(ctx, to.Name, fmt.Sprintf("mallory%d", m.txn), raw, nil)
}

// requireRefused fails unless the server answered the transaction and
// refused every event, and holds none of them in its graph.
func (m *mallory) requireRefused(to *node, what string, evs ...*rooms.Event) {
	m.c.t.Helper()
	res, err := m.send(to, evs...)
	if err != nil {
		m.c.Fatalf("%s: the transaction failed as a whole: %v", what, err)
	}
	for _, ev := range evs {
		if msg, ok := res[ev.EventID()]; !ok || msg == "" {
			m.c.Fatalf("%s: %s accepted %s (answer %q, listed %v)", what, to.Name, ev.EventID(), msg, ok)
		}
		requireNotInGraph(m.c, to, ev.EventID(), what)
	}
}

// requireNotInGraph fails if the node holds the event as part of the room
// graph (stored rejected, or not at all, is fine).
func requireNotInGraph(c *cluster, n *node, id, what string) {
	c.t.Helper()
	se, err := n.DB.Event(testContext(c.t), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		c.Fatalf("%s: %s: %v", what, n.Name, err)
	case !se.Outlier && !se.Rejected:
		c.Fatalf("%s: %s holds %s in its room graph", what, n.Name, id)
	}
}

// TestStressMaliciousPeer: a peer in the room sends forged signatures,
// events whose prev events never exist, a long chain it withholds, an
// oversized transaction, events for a room it is not in and invites for
// nobody, and answers garbage or hangs when asked for what it referenced.
// Ferry refuses, bounds and times out each, and the honest servers' room
// goes on and converges as if mallory had said nothing.
func TestStressMaliciousPeer(t *testing.T) {
	t.Parallel()
	forEachVersion(t, func(t *testing.T, version string) {
		c := newCluster(t, 2)
		a, b := c.Nodes[0], c.Nodes[1]
		r := c.SetupRoom(version)
		m := joinMallory(c, r)
		honest := func(what string) {
			c.t.Helper()
			for i, n := range c.Nodes {
				c.Say(n, r.ID, r.Anchors[i], "still fine after "+what)
			}
			c.WaitHeld(r.ID)
			requireSameState(c.t, r.ID, c.Nodes...)
		}

		t.Run("forged signatures", func(t *testing.T) {
			c.t = t
			_, other, err := ed25519.GenerateKey(crand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			wrongKey := m.key()
			wrongKey.Private = other
			forged := m.craft(wrongKey, nil)
			impostor := m.craft(m.key(), func(et *rooms.EventTemplate) { et.Sender = r.Anchors[0] })
			m.requireRefused(a, "forged signature", forged)
			m.requireRefused(b, "forged signature", forged)
			m.requireRefused(a, "a user of another server", impostor)
			honest("forged signatures")
		})

		t.Run("prev events that never exist", func(t *testing.T) {
			c.t = t
			for i := range 3 {
				orphan := m.craft(m.key(), func(et *rooms.EventTemplate) {
					et.PrevEvents = []string{fakeEventID(c)}
					et.Content = map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("orphan %d", i)}
				})
				m.requireRefused(a, "unknown prev events", orphan)
			}
			if c.Net.Requests(a.Name, m.Name, "get_missing_events") == 0 {
				c.Fatalf("%s never asked mallory for the missing events", a.Name)
			}
			honest("unknown prev events")
		})

		t.Run("oversized transaction", func(t *testing.T) {
			c.t = t
			var evs []*rooms.Event
			for i := range federation.MaxTransactionPDUs + 1 {
				evs = append(evs, m.craft(m.key(), func(et *rooms.EventTemplate) {
					et.Content = map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("flood %d", i)}
				}))
			}
			_, err := m.send(a, evs...)
			var he *federation.HTTPError
			if !errors.As(err, &he) || he.Status != http.StatusBadRequest {
				c.Fatalf("a transaction of %d PDUs: %v, want a 400", len(evs), err)
			}
			for _, ev := range evs {
				requireNotInGraph(c, a, ev.EventID(), "oversized transaction")
			}
			honest("an oversized transaction")
		})

		t.Run("a room it is not in", func(t *testing.T) {
			c.t = t
			ctx := testContext(t)
			other, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: r.Anchors[0], Version: version, Preset: homeserver.PresetPublicChat})
			if err != nil {
				t.Fatal(err)
			}
			prevs, err := a.DB.ForwardExtremities(ctx, other)
			if err != nil {
				t.Fatal(err)
			}
			state := a.CurrentState(t, other)
			intruder := m.craft(m.key(), func(et *rooms.EventTemplate) {
				et.RoomID, et.PrevEvents, et.Depth = other, prevs, 10
				et.AuthEvents = nil
				for _, tuple := range []store.StateKey{{Type: "m.room.create"}, {Type: "m.room.power_levels"}} {
					if tuple.Type == "m.room.create" && !m.v.CreateInAuthEvents {
						continue
					}
					et.AuthEvents = append(et.AuthEvents, state[tuple])
				}
			})
			before := a.CurrentState(t, other)
			m.requireRefused(a, "an event in a room mallory is not in", intruder)
			if after := a.CurrentState(t, other); len(after) != len(before) {
				c.Fatalf("the intruder changed the room's state: %s", describeState(after))
			}
			// A room ID of the version's shape (v12's have no server part).
			nowhere := "!" + fakeEventID(c)[1:]
			if strings.Contains(r.ID, ":") {
				nowhere = "!nowhere:" + m.Name
			}
			unknown := m.craft(m.key(), func(et *rooms.EventTemplate) {
				et.RoomID, et.AuthEvents = nowhere, []string{fakeEventID(c)}
			})
			m.requireRefused(a, "an event in a room nobody knows", unknown)
			honest("events for other rooms")
		})

		t.Run("garbage answers", func(t *testing.T) {
			c.t = t
			first := m.withheld("held back")
			second := m.withheld("needs the one held back")
			c.Net.Break(m.node, garbage)
			m.requireRefused(a, "a prev event its sender answers garbage for", second)
			if c.Net.Refused(a.Name, m.Name) == 0 {
				c.Fatalf("%s never asked mallory for %s", a.Name, first.EventID())
			}
			honest("garbage answers")
			c.Net.Heal()
			// Healed, the same PDU is taken in with what it lacked.
			res, err := m.send(a, second)
			if err != nil || res[second.EventID()] != "" {
				c.Fatalf("after the heal: %v, %q", err, res[second.EventID()])
			}
			c.WaitOn([]*node{a}, []string{first.EventID(), second.EventID()})
		})

		t.Run("a peer that hangs", func(t *testing.T) {
			c.t = t
			m.withheld("held back again")
			second := m.withheld("needs it")
			c.Net.Break(m.node, hang)
			hung := c.Net.Refused(a.Name, m.Name)
			// A gives up on the hanging peer after its fetch timeout and
			// answers the transaction; B's traffic to A goes on.
			m.requireRefused(a, "a prev event its sender never answers for", second)
			if c.Net.Refused(a.Name, m.Name) == hung {
				c.Fatalf("%s never asked the hanging peer for what it lacked", a.Name)
			}
			honest("a hanging peer")
			c.Net.Heal()
		})

		t.Run("a long withheld auth chain", func(t *testing.T) {
			c.t = t
			// Each membership change lists the previous one among its
			// auth events: mallory builds a chain longer than the engine
			// fetches for one PDU, withholds it and sends only its tip.
			const chain = 3 * stressMaxFetched
			for i := range chain {
				if _, err := m.Engine.SendEvent(testContext(t), r.ID, memberEvent(m.User, fmt.Sprintf("mallory %d", i))); err != nil {
					t.Fatal(err)
				}
			}
			tip := m.withheld("the tip of a long chain")
			before := c.Net.Requests(a.Name, m.Name, "event")
			res, err := m.send(a, tip)
			if err != nil {
				c.Fatalf("the transaction failed as a whole: %v", err)
			}
			fetched := c.Net.Requests(a.Name, m.Name, "event") - before
			t.Logf("%s answered %q for the tip after %d /event requests", a.Name, res[tip.EventID()], fetched)
			if fetched > stressMaxFetched {
				c.Fatalf("%s fetched %d events one by one for one PDU, more than its bound %d", a.Name, fetched, stressMaxFetched)
			}
			if res[tip.EventID()] == "" {
				// Taken in: then through the state at the tip, whose
				// auth chain the engine checked within its bound.
				c.WaitOn([]*node{a}, []string{tip.EventID()})
			} else {
				requireNotInGraph(c, a, tip.EventID(), "the tip of a withheld chain")
			}
			honest("a long withheld chain")
			// Delivered in order, as an honest sender would, the chain
			// is taken in everywhere.
			m.Flush(t)
			c.WaitOn(c.Nodes, []string{tip.EventID()})
		})

		t.Run("invites for nobody", func(t *testing.T) {
			c.t = t
			ctx := testContext(t)
			own, err := m.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: m.User, Version: version, Preset: homeserver.PresetPrivateChat})
			if err != nil {
				t.Fatal(err)
			}
			head, err := a.DB.HostLogHead(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = m.Engine.Invite(ctx, own, m.User, a.User("ghost"))
			var he *homeserver.Error
			if err == nil || !errors.As(err, &he) || he.Kind != homeserver.KindForbidden {
				c.Fatalf("invite of a user %s never registered: %v, want a refusal", a.Name, err)
			}
			if _, err := a.DB.Room(ctx, own); !errors.Is(err, store.ErrNotFound) {
				c.Fatalf("%s holds mallory's room after refusing the invite: %v", a.Name, err)
			}
			recs, err := a.DB.ReadHostLog(ctx, head, 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range recs {
				if rec.RoomID == own {
					c.Fatalf("%s's host log shows %s of mallory's room", a.Name, rec.Kind)
				}
			}
		})

		c.t = t
		c.Converge(r.ID, r.Speakers(c.Nodes))
	})
}
