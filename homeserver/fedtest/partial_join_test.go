package fedtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// The federation client joins with partial state and fetches full
// states for the engine; the engine serves partial send_join answers.
var (
	_ homeserver.PartialJoiner      = (*federation.Client)(nil)
	_ homeserver.FullStateFetcher   = (*federation.Client)(nil)
	_ federation.PartialJoinHandler = (*homeserver.Engine)(nil)
	_ homeserver.FullStateFetcher   = (*gatedRemote)(nil)
)

// gatedRemote is a node's remote whose /state requests (the full-state
// fetch of a partial join's resync) wait until the gate opens: the test
// decides when the resync may complete.
type gatedRemote struct {
	*hookedRemote
	gate <-chan struct{}
}

func (g *gatedRemote) FullState(ctx context.Context, server, roomID, eventID string) ([][]byte, [][]byte, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	return g.hookedRemote.FullState(ctx, server, roomID, eventID)
}

// enablePartialJoins makes n's engine join with partial state, with its
// full-state fetches held until gate is closed (nil: not held), and runs
// its background resyncs until the test ends.
func enablePartialJoins(t *testing.T, n *node, gate <-chan struct{}) {
	t.Helper()
	n.Engine.PartialStateJoins = true
	n.Engine.PartialResyncBackoff = 20 * time.Millisecond
	if gate != nil {
		n.Engine.Remote = &gatedRemote{hookedRemote: n.Remote, gate: gate}
	}
	ctx, cancel := context.WithCancel(context.Background())
	engine := n.Engine
	t.Cleanup(func() { cancel(); engine.WaitPartialResyncs() })
	if err := engine.StartPartialResyncs(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitFullState waits until n holds the full state of roomID.
func waitFullState(t *testing.T, n *node, roomID string) {
	t.Helper()
	deadline := time.Now().Add(2 * waitTimeout)
	for n.Engine.PartialState(testContext(t), roomID) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the state of %s is still partial", n.Name, roomID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// bigRoomOnAC makes a named public room on a with perA members of a and
// perC members of c (the first of them joined through a), and waits until
// a holds every membership. It returns the room and c's members.
func bigRoomOnAC(t *testing.T, a, c *node, perA, perC int) (string, []string) {
	t.Helper()
	ctx := testContext(t)
	alice := a.User("alice")
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat, Name: "big room"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < perA; i++ {
		if _, err := a.Engine.JoinRoom(ctx, roomID, a.User(fmt.Sprintf("a%02d", i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	var cUsers, joins []string
	for i := range perC {
		u := c.User(fmt.Sprintf("c%02d", i))
		ev, err := c.Engine.JoinRoom(ctx, roomID, u, []string{a.Name})
		if err != nil {
			t.Fatal(err)
		}
		cUsers, joins = append(cUsers, u), append(joins, ev.EventID())
	}
	for _, id := range joins {
		a.WaitEvent(t, id)
	}
	return roomID, cUsers
}

func joinedMembers(t *testing.T, n *node, roomID string) []string {
	t.Helper()
	m, err := n.DB.Members(testContext(t), roomID, "join")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// TestPartialJoin: B joins a 50-member room on A (members on A and C)
// with partial state through A, a Ferry that serves omit_members. B's
// user sends at once (A and C take it), B takes a message of a member of
// C whose membership was omitted, refuses an event of a user of C who
// never joined (as A, with full state, does), answers requests that need
// full state with a clear error, and after the resync holds the same
// members and state as A.
func TestPartialJoin(t *testing.T) {
	t.Parallel()
	nw := newNetwork()
	a, b, c := startNodeOpts(t, stressOptions(nw)), startNodeOpts(t, stressOptions(nw)), startNodeOpts(t, stressOptions(nw))
	gate := make(chan struct{})
	enablePartialJoins(t, b, gate)
	ctx := testContext(t)
	roomID, cUsers := bigRoomOnAC(t, a, c, 25, 25)
	carol := cUsers[0]
	// A user of C who joined and left before B's join: B's partial state
	// knows neither.
	leaver := c.User("leaver")
	leaverJoin, err := c.Engine.JoinRoom(ctx, roomID, leaver, nil)
	if err != nil {
		t.Fatal(err)
	}
	leave, err := c.Engine.LeaveRoom(ctx, roomID, leaver, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.WaitEvent(t, leave.EventID())

	bob := b.User("bob")
	join, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Engine.PartialState(ctx, roomID) {
		t.Fatal("B's state is not partial after a join through a resident that serves omit_members")
	}
	host := &homeserver.Host{Engine: b.Engine}
	if sum, err := host.Room(ctx, roomID); err != nil || !sum.PartialState {
		t.Fatalf("B's room summary while partial: %+v, %v", sum, err)
	}
	if got := b.membership(t, roomID, carol); got != "" {
		t.Fatalf("B's partial state holds %s's membership (%q): members were not omitted", carol, got)
	}
	if got := len(joinedMembers(t, b, roomID)); got != 1 {
		t.Fatalf("B's partial state of a named room holds %d joined members, want only B's own", got)
	}

	// Usable at once: B's message reaches A and C.
	hello := b.Say(t, roomID, bob, "hello while partial")
	a.WaitEvent(t, hello)
	c.WaitEvent(t, join.EventID())
	c.WaitEvent(t, hello)
	// A member of C whose membership B lacks is heard.
	reply := c.Say(t, roomID, carol, "hi bob")
	b.WaitEvent(t, reply)
	// Typing goes to the servers the resident named as well: C's users are
	// not in B's partial state.
	if err := b.Engine.SendTyping(ctx, roomID, bob, true); err != nil {
		t.Fatal(err)
	}
	c.waitTyping(t, bob)

	// A user of C who never joined: refused by A (full state) and by B
	// (partial state) alike.
	mallory := c.User("mallory")
	plID, err := b.DB.CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.power_levels"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := rooms.LookupVersion("12")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := rooms.BuildEvent(v, rooms.EventTemplate{
		Type: "m.room.message", Sender: mallory, RoomID: roomID, Content: map[string]any{"msgtype": "m.text", "body": "not a member"},
		PrevEvents: []string{reply}, AuthEvents: []string{plID}, Depth: 1000, OriginServerTS: time.Now().UnixMilli(),
	}, c.Own.Signer(c.Name))
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []*node{a, b} {
		res, err := c.Client.SendTransaction(ctx, target.Name, "forged-"+target.Name, []json.RawMessage{forged.JSON()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res[forged.EventID()] == "" {
			t.Errorf("%s accepted an event of a user who never joined", target.Name)
		}
		if se, err := target.DB.Event(ctx, forged.EventID()); err == nil && !se.Rejected {
			t.Errorf("%s holds the forged event as not rejected", target.Name)
		}
	}

	// The leaver's message citing its old join as auth event: A, with the
	// full state, rejects it (the state before says leave); B cannot tell
	// under partial state and takes it, and rejects it once it has the
	// full state.
	stale, err := rooms.BuildEvent(v, rooms.EventTemplate{
		Type: "m.room.message", Sender: leaver, RoomID: roomID, Content: map[string]any{"msgtype": "m.text", "body": "I left"},
		PrevEvents: []string{reply}, AuthEvents: []string{plID, leaverJoin.EventID()}, Depth: 1000, OriginServerTS: time.Now().UnixMilli(),
	}, c.Own.Signer(c.Name))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.Client.SendTransaction(ctx, a.Name, "stale-a", []json.RawMessage{stale.JSON()}, nil); err != nil || res[stale.EventID()] == "" {
		t.Fatalf("A took a message of a user who left: %v, %v", res, err)
	}
	if res, err := c.Client.SendTransaction(ctx, b.Name, "stale-b", []json.RawMessage{stale.JSON()}, nil); err != nil || res[stale.EventID()] != "" {
		t.Fatalf("B under partial state refused a message whose auth events allow it: %v, %v", res, err)
	}

	// What needs full state is refused with a clear error while partial.
	_, _, err = a.Client.StateIDs(ctx, b.Name, roomID, hello)
	requireMatrixError(t, err, 404, "M_NOT_FOUND", "partial state")
	_, _, err = c.Client.MakeJoin(ctx, b.Name, roomID, c.User("late"), rooms.SupportedVersionIDs())
	requireMatrixError(t, err, 400, "M_UNABLE_TO_GRANT_JOIN", "partial state")
	_, err = a.Client.Backfill(ctx, b.Name, roomID, []string{hello}, 10)
	requireMatrixError(t, err, 404, "M_NOT_FOUND", "partial state")
	_, _, err = c.Client.MakeLeave(ctx, b.Name, roomID, carol)
	requireMatrixError(t, err, 404, "M_NOT_FOUND", "partial state")

	// The resync completes: B's members and state are A's.
	close(gate)
	waitFullState(t, b, roomID)
	last := a.Say(t, roomID, a.User("alice"), "after the resync")
	b.WaitEvent(t, last)
	c.WaitEvent(t, last)
	if got, want := joinedMembers(t, b, roomID), joinedMembers(t, a, roomID); !slices.Equal(got, want) {
		t.Fatalf("B's members after the resync:\n%v\nA's:\n%v", got, want)
	}
	if n := len(joinedMembers(t, b, roomID)); n != 51 {
		t.Fatalf("B has %d joined members, want 51", n)
	}
	requireSameState(t, roomID, a, b, c)
	if se, err := b.DB.Event(ctx, stale.EventID()); err != nil || !se.Rejected {
		t.Fatalf("after the resync B holds the leaver's message as %+v, %v; want rejected", se, err)
	}
	if sum, err := host.Room(ctx, roomID); err != nil || sum.PartialState || sum.JoinedMembers != 51 {
		t.Fatalf("B's room summary after the resync: %+v, %v", sum, err)
	}
	before, err := b.DB.StateBefore(ctx, hello)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := before[store.StateKey{Type: "m.room.member", StateKey: carol}]; !ok {
		t.Fatal("the state before B's message sent while partial was not recomputed from the full state")
	}
	// B now serves what needs full state.
	if ids, _, err := a.Client.StateIDs(ctx, b.Name, roomID, hello); err != nil || len(ids) < 51 {
		t.Fatalf("state_ids from B after the resync: %d IDs, %v", len(ids), err)
	}
}

// TestPartialJoin_ResumesAfterRestart: B crashes while its resync waits;
// after the restart the resync resumes, fails while B's requests to A and
// C are refused, and completes once the network heals.
func TestPartialJoin_ResumesAfterRestart(t *testing.T) {
	t.Parallel()
	nw := newNetwork()
	a, b, c := startNodeOpts(t, stressOptions(nw)), startNodeOpts(t, stressOptions(nw)), startNodeOpts(t, stressOptions(nw))
	held := make(chan struct{}) // never opened: the first process never resyncs
	enablePartialJoins(t, b, held)
	ctx := testContext(t)
	roomID, cUsers := bigRoomOnAC(t, a, c, 5, 5)
	bob := b.User("bob")
	if _, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name}); err != nil {
		t.Fatal(err)
	}
	if !b.Engine.PartialState(ctx, roomID) {
		t.Fatal("B's state is not partial")
	}
	hello := b.Say(t, roomID, bob, "before the crash")
	a.WaitEvent(t, hello)

	nw.Set(b.Name, a.Name, refuse)
	nw.Set(b.Name, c.Name, refuse)
	b.Restart(t, true)
	enablePartialJoins(t, b, nil)
	if !b.Engine.PartialState(ctx, roomID) {
		t.Fatal("B's state is not partial after the restart")
	}
	deadline := time.Now().Add(waitTimeout)
	for nw.Refused(b.Name, a.Name) == 0 || nw.Refused(b.Name, c.Name) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the resumed resync never asked A and C")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !b.Engine.PartialState(ctx, roomID) {
		t.Fatal("B's state became full while every server was unreachable")
	}
	nw.Heal()
	waitFullState(t, b, roomID)
	if got, want := joinedMembers(t, b, roomID), joinedMembers(t, a, roomID); !slices.Equal(got, want) {
		t.Fatalf("B's members after the resync:\n%v\nA's:\n%v", got, want)
	}
	if !slices.Contains(joinedMembers(t, b, roomID), cUsers[len(cUsers)-1]) {
		t.Fatal("B lacks a member of C after the resync")
	}
	if err := b.DB.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestServeJoin_OmitMembers: a Ferry resident answers omit_members=true
// with the state without membership events (the room has a name),
// members_omitted and servers_in_room, and its auth chain without events
// of the state; any other value of omit_members is refused.
func TestServeJoin_OmitMembers(t *testing.T) {
	t.Parallel()
	nodes := startDeliveringNodes(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := testContext(t)
	roomID, _ := bigRoomOnAC(t, a, c, 3, 2)
	bob := b.User("bob")
	version, raw, err := b.Client.MakeJoin(ctx, a.Name, roomID, bob, rooms.SupportedVersionIDs())
	if err != nil {
		t.Fatal(err)
	}
	v, err := rooms.LookupVersion(version)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := templateOf(t, raw)
	tmpl.Content = map[string]any{"membership": "join"}
	tmpl.OriginServerTS = time.Now().UnixMilli()
	join, err := rooms.BuildEvent(v, tmpl, b.Own.Signer(b.Name))
	if err != nil {
		t.Fatal(err)
	}
	state, chain, _, omitted, servers, err := b.Client.SendJoinOmitMembers(ctx, a.Name, roomID, join.EventID(), join.JSON())
	if err != nil {
		t.Fatal(err)
	}
	if !omitted {
		t.Fatal("members_omitted is false")
	}
	if !slices.Contains(servers, a.Name) || !slices.Contains(servers, c.Name) || slices.Contains(servers, b.Name) {
		t.Fatalf("servers_in_room = %v, want A and C (not B)", servers)
	}
	inState := map[string]bool{}
	var types []string
	for _, r := range state {
		ev, err := rooms.ParseEvent(v, r)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type() == "m.room.member" {
			t.Errorf("the partial state holds the membership of %s", ev.Sender())
		}
		inState[ev.EventID()] = true
		types = append(types, ev.Type())
	}
	for _, want := range []string{"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"} {
		if !slices.Contains(types, want) {
			t.Errorf("the partial state lacks %s: %v", want, types)
		}
	}
	for _, r := range chain {
		ev, err := rooms.ParseEvent(v, r)
		if err != nil {
			t.Fatal(err)
		}
		if inState[ev.EventID()] {
			t.Errorf("the auth chain repeats %s of the state", ev.Type())
		}
	}
	_, err = b.Client.Do(ctx, federation.Request{
		Method: "PUT", Destination: a.Name, Path: "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(join.EventID()),
		Query: url.Values{"omit_members": {"yes"}}, Body: json.RawMessage(join.JSON()),
	})
	requireMatrixError(t, err, 400, "M_INVALID_PARAM", "omit_members")

	// A room with neither name nor alias: the answer keeps the
	// memberships of up to five heroes, never the joiner's.
	alice := a.User("alice")
	unnamed, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		if _, err := a.Engine.JoinRoom(ctx, unnamed, a.User(fmt.Sprintf("h%d", i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, raw, err = b.Client.MakeJoin(ctx, a.Name, unnamed, bob, rooms.SupportedVersionIDs()); err != nil {
		t.Fatal(err)
	}
	tmpl = templateOf(t, raw)
	tmpl.Content = map[string]any{"membership": "join"}
	tmpl.OriginServerTS = time.Now().UnixMilli()
	if join, err = rooms.BuildEvent(v, tmpl, b.Own.Signer(b.Name)); err != nil {
		t.Fatal(err)
	}
	state, _, _, omitted, _, err = b.Client.SendJoinOmitMembers(ctx, a.Name, unnamed, join.EventID(), join.JSON())
	if err != nil || !omitted {
		t.Fatalf("send_join into the unnamed room: omitted %v, %v", omitted, err)
	}
	var heroes []string
	for _, r := range state {
		ev, err := rooms.ParseEvent(v, r)
		if err != nil {
			t.Fatal(err)
		}
		if sk, _ := ev.StateKey(); ev.Type() == "m.room.member" {
			heroes = append(heroes, sk)
		}
	}
	if len(heroes) != 5 || slices.Contains(heroes, bob) {
		t.Fatalf("heroes of the unnamed room: %v, want five members other than the joiner", heroes)
	}
}

// requireMatrixError fails unless err is a Matrix error with the status
// and code, whose message holds text.
func requireMatrixError(t *testing.T, err error, status int, code, text string) {
	t.Helper()
	var he *federation.HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("got %v, want a Matrix error %d %s", err, status, code)
	}
	if he.Status != status || he.ErrCode != code || !strings.Contains(he.Message, text) {
		t.Fatalf("got %d %s %q, want %d %s mentioning %q", he.Status, he.ErrCode, he.Message, status, code, text)
	}
}

// TestPartialJoin_InviteOnly: B's user, invited into an invite-only room
// of A (B holds the invite), joins with partial state; the partial state
// authorises the join by the invite, and the resync completes.
func TestPartialJoin_InviteOnly(t *testing.T) {
	t.Parallel()
	nodes := startDeliveringNodes(t, 2)
	a, b := nodes[0], nodes[1]
	gate := make(chan struct{})
	enablePartialJoins(t, b, gate)
	ctx := testContext(t)
	alice, bob := a.User("alice"), b.User("bob")
	registerUsers(t, b, bob)
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "10", Preset: homeserver.PresetPrivateChat, Name: "private"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		u := a.User(fmt.Sprintf("p%d", i))
		if _, err := a.Engine.Invite(ctx, roomID, alice, u); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Engine.JoinRoom(ctx, roomID, u, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Engine.Invite(ctx, roomID, alice, bob); err != nil {
		t.Fatal(err)
	}
	join, err := b.Engine.JoinRoom(ctx, roomID, bob, []string{a.Name})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Engine.PartialState(ctx, roomID) {
		t.Fatal("B's join was not partial")
	}
	close(gate)
	waitFullState(t, b, roomID)
	hello := b.Say(t, roomID, bob, "hello")
	a.WaitEvent(t, hello)
	if got, want := joinedMembers(t, b, roomID), joinedMembers(t, a, roomID); !slices.Equal(got, want) || len(got) != 5 {
		t.Fatalf("B's members after the resync:\n%v\nA's:\n%v", got, want)
	}
	before, err := b.DB.StateBefore(ctx, join.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := before[store.StateKey{Type: "m.room.member", StateKey: a.User("p1")}]; !ok {
		t.Fatal("the state before B's join lacks a member after the resync")
	}
	requireSameState(t, roomID, a, b)
}

// TestPartialJoin_Restricted: B's user joins a restricted room with
// partial state; A authorises the join, and its partial answer keeps
// the authoriser's membership, an auth event of the join.
func TestPartialJoin_Restricted(t *testing.T) {
	t.Parallel()
	nodes := startDeliveringNodes(t, 2)
	a, b := nodes[0], nodes[1]
	gate := make(chan struct{})
	enablePartialJoins(t, b, gate)
	ctx := testContext(t)
	alice, bob := a.User("alice"), b.User("bob")
	space, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat, Name: "space"})
	if err != nil {
		t.Fatal(err)
	}
	restricted, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPrivateChat, Name: "restricted"})
	if err != nil {
		t.Fatal(err)
	}
	a.SetState(t, restricted, alice, "m.room.join_rules", "", map[string]any{
		"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}},
	})
	if _, err := b.Engine.JoinRoom(ctx, space, bob, []string{a.Name}); err != nil {
		t.Fatal(err)
	}
	join, err := b.Engine.JoinRoom(ctx, restricted, bob, []string{a.Name})
	if err != nil {
		t.Fatal(err)
	}
	if join.Content()["join_authorised_via_users_server"] != alice {
		t.Fatalf("restricted join %s", join.JSON())
	}
	if !b.Engine.PartialState(ctx, space) || !b.Engine.PartialState(ctx, restricted) {
		t.Fatal("B's joins were not partial")
	}
	close(gate)
	waitFullState(t, b, space)
	waitFullState(t, b, restricted)
	hello := b.Say(t, restricted, bob, "hello")
	a.WaitEvent(t, hello)
	requireSameState(t, restricted, a, b)
}

// waitTyping waits until the server's host log holds an m.typing EDU that
// names user, woken by the log.
func (n *node) waitTyping(t *testing.T, user string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), waitTimeout)
	defer cancel()
	for after := int64(0); ; {
		head, err := n.DB.HostLogHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		records, err := n.DB.ReadHostLog(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range records {
			after = r.Pos
			if r.Kind == store.HostEDU && strings.Contains(string(r.Payload), `"m.typing"`) && strings.Contains(string(r.Payload), user) {
				return
			}
		}
		if err := n.DB.WaitHostLog(ctx, head); err != nil {
			t.Fatalf("%s: waiting for %s's typing: %v", n.Name, user, err)
		}
	}
}
