package federation

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// inboundWorld is Ferry (ferry.test) and a scripted remote (remote.test)
// sharing a public room Ferry created.
type inboundWorld struct {
	ferry  *ferryNode
	remote *roomNode
	script *scriptedRooms
	room   *remoteRoom
}

const (
	alice = "@alice:ferry.test"
	bob   = "@bob:remote.test"
	carol = "@carol:remote.test"
)

func newInboundWorld(t testing.TB, version string) *inboundWorld {
	t.Helper()
	pki := newTestPKI(t)
	ferry := startFerry(t, pki, "ferry.test")
	remote := newRoomNode(t, pki, "remote.test", 42)
	script := newScriptedRooms()
	remote.start(t, pki, script)
	linkNodes(ferry.roomNode, remote)
	roomID, err := ferry.engine.CreateRoom(context.Background(), homeserver.CreateRoomRequest{
		Creator: alice, Version: version, Preset: homeserver.PresetPublicChat,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &inboundWorld{ferry: ferry, remote: remote, script: script, room: newRemoteRoom(t, remote, ferry, roomID)}
}

// join sends the remote user's join and checks it was accepted.
func (w *inboundWorld) join(t testing.TB, txnID, user string) *rooms.Event {
	t.Helper()
	ev := w.room.build(eventSpec{typ: "m.room.member", stateKey: rooms.StringPtr(user), sender: user, content: map[string]any{"membership": "join"}})
	if res := w.room.send(txnID, ev); res[ev.EventID()] != "" {
		t.Fatalf("join of %s: %q", user, res[ev.EventID()])
	}
	w.room.apply(ev)
	return ev
}

func (w *inboundWorld) message(sender, body string, prev []string) *rooms.Event {
	return w.room.build(eventSpec{typ: "m.room.message", sender: sender, content: map[string]any{"msgtype": "m.text", "body": body}, prev: prev})
}

func expectAccepted(t *testing.T, res map[string]string, evs ...*rooms.Event) {
	t.Helper()
	for _, ev := range evs {
		msg, ok := res[ev.EventID()]
		if !ok || msg != "" {
			t.Fatalf("event %s: answer %q (listed %v), want accepted", ev.EventID(), msg, ok)
		}
	}
}

func expectError(t *testing.T, res map[string]string, ev *rooms.Event, want string) {
	t.Helper()
	msg := res[ev.EventID()]
	if !strings.Contains(msg, want) {
		t.Fatalf("event %s: answer %q, want an error containing %q", ev.EventID(), msg, want)
	}
}

// TestSend_InboundPipeline runs the inbound scenario on both room
// versions: a remote joins Ferry's room over /send and sends accepted,
// dropped, redacted, rejected and soft-failed events, a gap that Ferry
// fills with /get_missing_events, a repeated transaction, PDUs for an
// unknown room and, once denied by the server ACL, more PDUs.
func TestSend_InboundPipeline(t *testing.T) {
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			testInboundPipeline(t, version)
		})
	}
}

func testInboundPipeline(t *testing.T, version string) {
	ctx := context.Background()
	w := newInboundWorld(t, version)
	f, rr := w.ferry, w.room
	roomID := rr.roomID

	// Joins: the remote builds them on Ferry's extremity with auth events
	// from Ferry's state.
	joinBob := w.join(t, "t-join-bob", bob)
	joinCarol := w.join(t, "t-join-carol", carol)
	if ext := rr.extremities(); !slices.Equal(ext, []string{joinCarol.EventID()}) {
		t.Fatalf("extremities after the joins: %v", ext)
	}
	members, err := f.db.Members(ctx, roomID, "join")
	if err != nil || !containsAll(members, alice, bob, carol) {
		t.Fatalf("joined members %v, %v", members, err)
	}

	// An accepted chain in one transaction, sent newest first: Ferry
	// orders by depth.
	m1 := w.message(bob, "one", nil)
	m2 := w.message(bob, "two", []string{m1.EventID()})
	m3 := w.message(carol, "three", []string{m2.EventID()})
	res := rr.send("t-chain", m3, m1, m2)
	expectAccepted(t, res, m1, m2, m3)
	if ext := rr.extremities(); !slices.Equal(ext, []string{m3.EventID()}) {
		t.Fatalf("extremities after the chain: %v", ext)
	}
	if log := f.hostLogEvents(t); !containsAll(log, joinBob.EventID(), joinCarol.EventID(), m1.EventID(), m2.EventID(), m3.EventID()) {
		t.Fatalf("host log lacks accepted events: %v", log)
	}

	// A bad signature: dropped, not stored.
	forged := w.message(bob, "forged", nil)
	obj := maps.Clone(forged.Object())
	other := testKeys(t, 99).Signer("remote.test")
	if err := rooms.SignEvent(rr.v, obj, rooms.SigningKey{ServerName: "remote.test", KeyID: w.remote.signer.KeyID, Private: other.Private}); err != nil {
		t.Fatal(err)
	}
	forgedEv, err := rooms.NewEventFromObject(rr.v, obj)
	if err != nil {
		t.Fatal(err)
	}
	res = rr.send("t-forged", forgedEv)
	expectError(t, res, forgedEv, "signature")
	if _, err := f.db.Event(ctx, forgedEv.EventID()); !isNotFound(err) {
		t.Fatalf("forged event stored: %v", err)
	}

	// A content hash mismatch: the body changed after signing; the
	// signatures (over the redacted form) still hold, so the event is
	// kept redacted.
	tampered := w.message(bob, "original", nil)
	tobj := maps.Clone(tampered.Object())
	tobj["content"] = map[string]any{"msgtype": "m.text", "body": "changed in transit"}
	tamperedEv, err := rooms.NewEventFromObject(rr.v, tobj)
	if err != nil {
		t.Fatal(err)
	}
	if tamperedEv.EventID() != tampered.EventID() {
		t.Fatal("the event ID must not depend on a message body")
	}
	res = rr.send("t-tampered", tamperedEv)
	expectAccepted(t, res, tamperedEv)
	if se := f.stored(t, tamperedEv.EventID()); len(se.Event.Content()) != 0 {
		t.Fatalf("tampered event stored with content %v, want the redacted form", se.Event.Content())
	}

	// Failing its own auth events: the sender's membership is not among
	// them. Rejected and stored as such; an event naming it as a prev
	// event is judged normally.
	var authNoMember []string
	for _, k := range []rooms.StateTuple{rooms.CreateTuple, {Type: "m.room.power_levels"}} {
		if k == rooms.CreateTuple && !rr.v.CreateInAuthEvents {
			continue
		}
		authNoMember = append(authNoMember, rr.state[k].EventID())
	}
	bad := rr.build(eventSpec{typ: "m.room.message", sender: bob, content: map[string]any{"body": "no membership"}, authEvents: authNoMember})
	res = rr.send("t-bad-auth", bad)
	expectError(t, res, bad, "rejected")
	if se := f.stored(t, bad.EventID()); !se.Rejected {
		t.Fatal("event failing its auth events is not stored as rejected")
	}
	afterBad := w.message(bob, "after a rejected event", []string{bad.EventID()})
	res = rr.send("t-after-bad", afterBad)
	expectAccepted(t, res, afterBad)
	if ext := rr.extremities(); slices.Contains(ext, bad.EventID()) || !slices.Contains(ext, afterBad.EventID()) {
		t.Fatalf("extremities %v: want %s and never the rejected %s", ext, afterBad.EventID(), bad.EventID())
	}

	// A gap of five: the remote sends only the sixth event; Ferry asks
	// for the rest with /get_missing_events.
	gap := make([]*rooms.Event, 6)
	var prev []string
	for i := range gap {
		gap[i] = w.message(carol, "gap "+string(rune('a'+i)), prev)
		prev = []string{gap[i].EventID()}
	}
	w.script.mu.Lock()
	for _, ev := range gap[:5] {
		w.script.missing = append(w.script.missing, ev.JSON())
	}
	w.script.mu.Unlock()
	res = rr.send("t-gap", gap[5])
	expectAccepted(t, res, gap[5])
	if w.script.askedFor("get_missing_events") != 1 {
		t.Fatalf("get_missing_events asked %d times, want 1", w.script.askedFor("get_missing_events"))
	}
	for _, ev := range gap {
		if se := f.stored(t, ev.EventID()); se.Rejected || se.Outlier || se.SoftFailed {
			t.Fatalf("gap event %s: rejected %v outlier %v soft-failed %v", ev.EventID(), se.Rejected, se.Outlier, se.SoftFailed)
		}
	}
	if ext := rr.extremities(); !slices.Equal(ext, []string{gap[5].EventID()}) {
		t.Fatalf("extremities after the gap: %v", ext)
	}

	// A gap get_missing_events does not fill: dave's join is never sent
	// and the remote answers /get_missing_events with nothing, so Ferry
	// takes the state at dave's message from /state_ids, fetches the
	// join with /event as an outlier and accepts the message.
	dave := "@dave:remote.test"
	w.script.mu.Lock()
	w.script.missing = nil
	w.script.mu.Unlock()
	daveJoin := rr.build(eventSpec{typ: "m.room.member", stateKey: rooms.StringPtr(dave), sender: dave, content: map[string]any{"membership": "join"}})
	rr.apply(daveJoin)
	daveMsg := w.message(dave, "hello from a gap", []string{daveJoin.EventID()})
	w.script.add(daveJoin)
	w.script.mu.Lock()
	for _, ev := range rr.state {
		w.script.stateIDs = append(w.script.stateIDs, ev.EventID())
	}
	w.script.chainIDs = append(w.script.chainIDs, daveJoin.AuthEvents()...)
	w.script.mu.Unlock()
	res = rr.send("t-state-gap", daveMsg)
	expectAccepted(t, res, daveMsg)
	if se := f.stored(t, daveMsg.EventID()); se.SoftFailed || se.Outlier {
		t.Fatalf("dave's message: soft-failed %v, outlier %v", se.SoftFailed, se.Outlier)
	}
	if w.script.askedFor("state_ids") != 1 || w.script.askedFor("event") == 0 {
		t.Fatalf("remote was asked %v, want state_ids once and event", w.script.asked)
	}
	if se := f.stored(t, daveJoin.EventID()); !se.Outlier {
		t.Fatal("the join fetched for the state is not an outlier")
	}
	if ext := rr.extremities(); !slices.Equal(ext, sortedIDs(gap[5], daveMsg)) {
		t.Fatalf("extremities after the state gap: %v", ext)
	}
	if members, _ := f.db.Members(ctx, roomID, "join"); !slices.Contains(members, dave) {
		t.Fatalf("current members %v lack dave after resolution", members)
	}

	// An unknown auth event: bob's message names a newer membership
	// event of his that Ferry never received; Ferry fetches it with
	// /event, stores it as an outlier and accepts the message.
	profile := rr.build(eventSpec{typ: "m.room.member", stateKey: rooms.StringPtr(bob), sender: bob,
		content: map[string]any{"membership": "join", "displayname": "Bob"}})
	w.script.add(profile)
	var authWithProfile []string
	for _, id := range rr.build(eventSpec{typ: "m.room.message", sender: bob, content: map[string]any{}}).AuthEvents() {
		if id == rr.state[rooms.StateTuple{Type: "m.room.member", StateKey: bob}].EventID() {
			id = profile.EventID()
		}
		authWithProfile = append(authWithProfile, id)
	}
	fetchedBefore := w.script.askedFor("event")
	withProfile := rr.build(eventSpec{typ: "m.room.message", sender: bob, content: map[string]any{"body": "as Bob"}, authEvents: authWithProfile})
	res = rr.send("t-auth-fetch", withProfile)
	expectAccepted(t, res, withProfile)
	if w.script.askedFor("event") != fetchedBefore+1 {
		t.Fatalf("remote was asked for %d events, want 1 more than %d", w.script.askedFor("event"), fetchedBefore)
	}
	if se := f.stored(t, profile.EventID()); !se.Outlier || se.Rejected {
		t.Fatalf("fetched auth event: outlier %v, rejected %v", se.Outlier, se.Rejected)
	}

	// Bob redacts his own message: the stored copy is redacted.
	redaction := buildRedaction(t, rr, bob, m1.EventID())
	res = rr.send("t-redact", redaction)
	expectAccepted(t, res, redaction)
	if se := f.stored(t, m1.EventID()); !se.Redacted || len(se.Event.Content()) != 0 {
		t.Fatalf("redacted message: redacted %v, content %v", se.Redacted, se.Event.Content())
	}

	// The same transaction ID again, with other content: answered from
	// the store, not processed.
	replay := w.message(bob, "never processed", nil)
	res = rr.send("t-chain", replay)
	if _, listed := res[replay.EventID()]; listed || len(res) != 3 {
		t.Fatalf("repeated transaction answered %v, want the stored answer for three events", res)
	}
	expectAccepted(t, res, m1, m2, m3)
	if _, err := f.db.Event(ctx, replay.EventID()); !isNotFound(err) {
		t.Fatalf("event of a repeated transaction stored: %v", err)
	}

	// A PDU for a room Ferry is not in.
	elsewhere := rr.build(eventSpec{typ: "m.room.message", sender: bob, content: map[string]any{"body": "x"}, prev: []string{gap[5].EventID()}})
	eobj := maps.Clone(elsewhere.Object())
	eobj["room_id"] = "!elsewhere:remote.test"
	if rr.v.RoomIDs == rooms.RoomIDFromCreate {
		eobj["room_id"] = string(rooms.RoomIDFromCreateEventID(rooms.EventID(m1.EventID())))
	}
	if err := rooms.SignEvent(rr.v, eobj, w.remote.signer); err != nil {
		t.Fatal(err)
	}
	elsewhereEv, err := rooms.NewEventFromObject(rr.v, eobj)
	if err != nil {
		t.Fatal(err)
	}
	res = rr.send("t-elsewhere", elsewhereEv)
	expectError(t, res, elsewhereEv, "not in room")

	// Soft failure: Ferry's admin bans carol; carol's event built on the
	// state before the ban passes there but not against the current state.
	beforeBan := rr.extremities()
	ban, err := f.engine.SendEvent(ctx, roomID, homeserver.LocalEvent{
		Type: "m.room.member", StateKey: rooms.StringPtr(carol), Sender: alice, Content: map[string]any{"membership": "ban"},
	})
	if err != nil {
		t.Fatal(err)
	}
	late := w.message(carol, "sent before I saw the ban", beforeBan)
	res = rr.send("t-soft", late)
	expectAccepted(t, res, late)
	if se := f.stored(t, late.EventID()); !se.SoftFailed {
		t.Fatal("event failing only against the current state is not soft-failed")
	}
	if ext := rr.extremities(); !slices.Equal(ext, []string{ban.EventID()}) {
		t.Fatalf("extremities %v: a soft-failed event must not become one", ext)
	}
	if slices.Contains(f.hostLogEvents(t), late.EventID()) {
		t.Fatal("soft-failed event delivered to the host")
	}

	// EDUs: bob's typing is logged for the host, carol's (banned) and one
	// claiming a user of another server are not.
	typing := func(user string) EDU {
		c, _ := json.Marshal(map[string]any{"room_id": roomID, "user_id": user, "typing": true})
		return EDU{Type: "m.typing", Content: c}
	}
	receipt, _ := json.Marshal(map[string]any{roomID: map[string]any{"m.read": map[string]any{
		bob: map[string]any{"event_ids": []string{gap[5].EventID()}, "data": map[string]any{"ts": 1}},
	}}})
	if _, err := w.remote.client.SendTransaction(ctx, "ferry.test", "t-edus", nil,
		[]EDU{typing(bob), typing(carol), typing(alice), {Type: "m.receipt", Content: receipt}, {Type: "m.presence", Content: json.RawMessage(`{"push":[]}`)}}); err != nil {
		t.Fatal(err)
	}
	edus := f.hostLogPayloads(t, store.HostEDU)
	if len(edus) != 2 || !strings.Contains(edus[0], bob) || !strings.Contains(edus[1], "m.receipt") {
		t.Fatalf("host log EDUs %q, want bob's typing and bob's receipt", edus)
	}

	// The read endpoints, verified by the remote.
	verifyReads(t, w, gap[5])

	// The server ACL denies remote.test: its PDUs are dropped and its
	// reads refused.
	if _, err := f.engine.SendEvent(ctx, roomID, homeserver.LocalEvent{
		Type: "m.room.server_acl", StateKey: rooms.StringPtr(""), Sender: alice,
		Content: map[string]any{"allow": []any{"*"}, "deny": []any{"remote.*"}, "allow_ip_literals": false},
	}); err != nil {
		t.Fatal(err)
	}
	denied := w.message(bob, "denied", nil)
	res = rr.send("t-denied", denied)
	expectError(t, res, denied, "ACL")
	if _, err := f.db.Event(ctx, denied.EventID()); !isNotFound(err) {
		t.Fatalf("ACL-denied event stored: %v", err)
	}
	_, _, err = w.remote.client.StateIDs(ctx, "ferry.test", roomID, gap[5].EventID())
	var herr *HTTPError
	if !errors.As(err, &herr) || herr.Status != 403 || herr.ErrCode != "M_FORBIDDEN" {
		t.Fatalf("state_ids by a denied server: %v, want 403 M_FORBIDDEN", err)
	}
}

// verifyReads has the remote read the room through every read endpoint,
// verify each event's signatures and hashes with keys it fetched itself,
// and rebuild the state before at from /state_ids.
func verifyReads(t *testing.T, w *inboundWorld, at *rooms.Event) {
	t.Helper()
	ctx := context.Background()
	c, rr, ferry := w.remote.client, w.room, "ferry.test"
	lookup := w.remote.ring.KeyLookup(ctx)
	parse := func(raw []byte) *rooms.Event {
		t.Helper()
		ev, err := rooms.ParseEvent(rr.v, raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := rooms.VerifyEventSignatures(ev, lookup); err != nil {
			t.Fatalf("event %s from Ferry: %v", ev.EventID(), err)
		}
		return ev
	}

	stateIDs, chainIDs, err := c.StateIDs(ctx, ferry, rr.roomID, at.EventID())
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := map[rooms.StateTuple]*rooms.Event{}
	for _, id := range stateIDs {
		raw, err := c.Event(ctx, ferry, id)
		if err != nil {
			t.Fatal(err)
		}
		ev := parse(raw)
		if ev.EventID() != id {
			t.Fatalf("/event %s returned %s", id, ev.EventID())
		}
		k, _ := rooms.StateTupleOf(ev)
		rebuilt[k] = ev
	}
	want, err := w.ferry.db.StateBefore(ctx, at.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if len(rebuilt) != len(want) {
		t.Fatalf("state_ids: %d events, Ferry holds %d", len(rebuilt), len(want))
	}
	for k, id := range want {
		if ev := rebuilt[rooms.StateTuple(k)]; ev == nil || ev.EventID() != id {
			t.Fatalf("state_ids: %v differs", k)
		}
	}
	for _, user := range []string{alice, bob, carol} {
		if m := rebuilt[rooms.StateTuple{Type: "m.room.member", StateKey: user}]; m == nil || m.Membership() != "join" {
			t.Fatalf("state before %s: %s not joined", at.EventID(), user)
		}
	}
	// The rebuilt state authorizes the event it is the state before.
	if err := rooms.CheckAuth(at, rebuilt); err != nil {
		t.Fatalf("the state Ferry served does not authorize %s: %v", at.EventID(), err)
	}

	state, chain, err := c.State(ctx, ferry, rr.roomID, at.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if len(state) != len(stateIDs) || len(chain) != len(chainIDs) {
		t.Fatalf("/state: %d events and %d auth events, /state_ids %d and %d", len(state), len(chain), len(stateIDs), len(chainIDs))
	}
	for _, raw := range append(state, chain...) {
		parse(raw)
	}

	authChain, err := c.EventAuth(ctx, ferry, rr.roomID, at.EventID())
	if err != nil {
		t.Fatal(err)
	}
	var authIDs []string
	for _, raw := range authChain {
		authIDs = append(authIDs, parse(raw).EventID())
	}
	if !containsAll(authIDs, at.AuthEvents()...) {
		t.Fatalf("event_auth %v lacks the auth events %v", authIDs, at.AuthEvents())
	}

	back, err := c.Backfill(ctx, ferry, rr.roomID, []string{at.EventID()}, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 4 || parse(back[0]).EventID() != at.EventID() {
		t.Fatalf("backfill returned %d events, want 4 starting at %s", len(back), at.EventID())
	}

	missing, err := c.GetMissingEvents(ctx, ferry, rr.roomID, []string{at.PrevEvents()[0]}, []string{at.EventID()}, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 0 {
		t.Fatalf("get_missing_events between adjacent events returned %d events", len(missing))
	}

	// timestamp_to_event finds an event on the right side of the time, one
	// that the remote can then fetch.
	for _, forward := range []bool{true, false} {
		id, ts, err := c.TimestampToEvent(ctx, ferry, rr.roomID, at.OriginServerTS(), forward)
		if err != nil {
			t.Fatalf("timestamp_to_event forward=%v: %v", forward, err)
		}
		if forward && ts < at.OriginServerTS() || !forward && ts > at.OriginServerTS() {
			t.Fatalf("timestamp_to_event forward=%v from %d gave an event at %d", forward, at.OriginServerTS(), ts)
		}
		raw, err := c.Event(ctx, ferry, id)
		if err != nil {
			t.Fatal(err)
		}
		if ev := parse(raw); ev.OriginServerTS() != ts {
			t.Fatalf("timestamp_to_event said %d, the event says %d", ts, ev.OriginServerTS())
		}
	}
	var herr *HTTPError
	_, _, err = c.TimestampToEvent(ctx, ferry, rr.roomID, 1<<52, true)
	if !errors.As(err, &herr) || herr.Status != 404 || herr.ErrCode != "M_NOT_FOUND" {
		t.Fatalf("timestamp_to_event past the end: %v, want 404 M_NOT_FOUND", err)
	}
	_, err = c.Do(ctx, Request{Method: "GET", Destination: ferry,
		Path:  roomPath("/_matrix/federation/v1/timestamp_to_event", rr.roomID),
		Query: url.Values{"ts": {"12"}, "dir": {"sideways"}}})
	if !errors.As(err, &herr) || herr.Status != 400 {
		t.Fatalf("timestamp_to_event with a bad dir: %v, want 400", err)
	}

	// Unknown events and rooms.
	_, err = c.Event(ctx, ferry, "$unknown")
	if !errors.As(err, &herr) || herr.Status != 404 {
		t.Fatalf("unknown event: %v, want 404", err)
	}
	_, _, err = c.StateIDs(ctx, ferry, "!nowhere:ferry.test", at.EventID())
	if !errors.As(err, &herr) || herr.Status != 404 {
		t.Fatalf("unknown room: %v, want 404", err)
	}
}

// sortedIDs returns the events' IDs, sorted.
func sortedIDs(evs ...*rooms.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.EventID()
	}
	slices.Sort(out)
	return out
}

// buildRedaction builds a redaction of target; the builder puts the
// target where the room version wants it.
func buildRedaction(t *testing.T, rr *remoteRoom, sender, target string) *rooms.Event {
	t.Helper()
	prev := rr.extremities()
	var depth int64
	for _, id := range prev {
		depth = max(depth, rr.lookup(id).Depth())
	}
	rr.ts++
	tmpl := rooms.EventTemplate{Type: "m.room.redaction", Sender: sender, RoomID: rr.roomID, Content: map[string]any{},
		PrevEvents: prev, Depth: depth + 1, OriginServerTS: rr.ts, Redacts: target}
	for _, k := range rooms.AuthSelectionFor(rr.v, tmpl) {
		if ev := rr.state[k]; ev != nil {
			tmpl.AuthEvents = append(tmpl.AuthEvents, ev.EventID())
		}
	}
	ev, err := rooms.BuildEvent(rr.v, tmpl, rr.node.signer)
	if err != nil {
		t.Fatal(err)
	}
	rr.events[ev.EventID()] = ev
	return ev
}

// TestSend_Envelope checks what /send refuses before looking at any PDU,
// and the read endpoints' parameter checks.
func TestSend_Envelope(t *testing.T) {
	w := newInboundWorld(t, "12")
	w.join(t, "t-join", bob)
	ctx := context.Background()
	manyPDUs := make([]any, MaxTransactionPDUs+1)
	for i := range manyPDUs {
		manyPDUs[i] = map[string]any{}
	}
	manyEDUs := make([]any, MaxTransactionEDUs+1)
	for i := range manyEDUs {
		manyEDUs[i] = map[string]any{"edu_type": "m.presence", "content": map[string]any{}}
	}
	cases := []struct {
		name   string
		req    Request
		status int
		code   string
	}{
		{"origin is not the authenticated one", Request{Method: "PUT", Path: "/_matrix/federation/v1/send/e1",
			Body: map[string]any{"origin": "other.test", "origin_server_ts": 1, "pdus": []any{}}}, 400, "M_BAD_JSON"},
		{"no pdus", Request{Method: "PUT", Path: "/_matrix/federation/v1/send/e2",
			Body: map[string]any{"origin": "remote.test", "origin_server_ts": 1}}, 400, "M_BAD_JSON"},
		{"no origin_server_ts", Request{Method: "PUT", Path: "/_matrix/federation/v1/send/e3",
			Body: map[string]any{"origin": "remote.test", "pdus": []any{}}}, 400, "M_BAD_JSON"},
		{"too many PDUs", Request{Method: "PUT", Path: "/_matrix/federation/v1/send/e4",
			Body: map[string]any{"origin": "remote.test", "origin_server_ts": 1, "pdus": manyPDUs}}, 400, "M_BAD_JSON"},
		{"too many EDUs", Request{Method: "PUT", Path: "/_matrix/federation/v1/send/e5",
			Body: map[string]any{"origin": "remote.test", "origin_server_ts": 1, "pdus": []any{}, "edus": manyEDUs}}, 400, "M_BAD_JSON"},
		{"state_ids without event_id", Request{Method: "GET", Path: "/_matrix/federation/v1/state_ids/" + w.room.roomID}, 400, "M_MISSING_PARAM"},
		{"backfill without v", Request{Method: "GET", Path: "/_matrix/federation/v1/backfill/" + w.room.roomID}, 400, "M_MISSING_PARAM"},
		{"get_missing_events without latest", Request{Method: "POST", Path: "/_matrix/federation/v1/get_missing_events/" + w.room.roomID,
			Body: map[string]any{"earliest_events": []any{}}}, 400, "M_BAD_JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.req.Destination = "ferry.test"
			_, err := w.remote.client.Do(ctx, c.req)
			var herr *HTTPError
			if !errors.As(err, &herr) || herr.Status != c.status || herr.ErrCode != c.code {
				t.Fatalf("%v, want %d %s", err, c.status, c.code)
			}
		})
	}
	// A trailing slash after the transaction ID is accepted.
	raw, err := w.remote.client.Do(ctx, Request{Method: "PUT", Destination: "ferry.test", Path: "/_matrix/federation/v1/send/t-slash/",
		Body: map[string]any{"origin": "remote.test", "origin_server_ts": 1, "pdus": []any{}}})
	if err != nil || string(raw) != `{"pdus":{}}` {
		t.Fatalf("transaction with a trailing slash: %s, %v", raw, err)
	}
	// An empty transaction is fine and answers an empty pdus object.
	res, err := w.remote.client.SendTransaction(ctx, "ferry.test", "t-empty", nil, nil)
	if err != nil || len(res) != 0 {
		t.Fatalf("empty transaction: %v, %v", res, err)
	}
}

// failingRooms reports every PDU as failed by a fault of its own.
type failingRooms struct {
	*scriptedRooms
	stored atomic.Int32
}

type ourFault struct{}

func (ourFault) Error() string  { return "database is on fire" }
func (ourFault) Internal() bool { return true }

func (f *failingRooms) ReceivePDUs(_ context.Context, _ string, pdus [][]byte) map[string]error {
	return map[string]error{"$some-event": ourFault{}}
}

func (f *failingRooms) StoreTransactionResponse(context.Context, string, string, []byte) error {
	f.stored.Add(1)
	return nil
}

// TestSend_InternalErrorFailsTransaction: a PDU the handler could not
// process through its own fault fails the whole transaction with 500,
// without storing an answer, so the sender retries.
func TestSend_InternalErrorFailsTransaction(t *testing.T) {
	pki := newTestPKI(t)
	failing := &failingRooms{scriptedRooms: newScriptedRooms()}
	receiver := newRoomNode(t, pki, "receiver.test", 51)
	receiver.start(t, pki, failing)
	sender := newRoomNode(t, pki, "sender.test", 52)
	sender.start(t, pki, newScriptedRooms())
	linkNodes(receiver, sender)
	_, err := sender.client.SendTransaction(context.Background(), "receiver.test", "t1", []json.RawMessage{json.RawMessage(`{}`)}, nil)
	var herr *HTTPError
	if !errors.As(err, &herr) || herr.Status != 500 || herr.ErrCode != "M_UNKNOWN" || strings.Contains(herr.Message, "fire") {
		t.Fatalf("%v, want 500 M_UNKNOWN without the cause", err)
	}
	if failing.stored.Load() != 0 {
		t.Fatal("an answer was stored for a failed transaction")
	}
}

// countingRooms stores transaction answers in memory and counts the
// transactions it processes.
type countingRooms struct {
	*scriptedRooms
	mu        sync.Mutex
	answers   map[string][]byte
	processed atomic.Int32
}

func (c *countingRooms) TransactionResponse(_ context.Context, origin, txnID string) ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.answers[origin+"|"+txnID]
	return a, ok, nil
}

func (c *countingRooms) StoreTransactionResponse(_ context.Context, origin, txnID string, response []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answers[origin+"|"+txnID] = response
	return nil
}

func (c *countingRooms) ReceivePDUs(context.Context, string, [][]byte) map[string]error {
	c.processed.Add(1)
	return map[string]error{"$a": nil, "$b": errors.New("rejected for the test")}
}

// TestSend_OneOriginInOrder sends one transaction from one origin many
// times at once: transactions of an origin are processed one at a time,
// so it is processed once and every copy gets the same answer.
func TestSend_OneOriginInOrder(t *testing.T) {
	pki := newTestPKI(t)
	counting := &countingRooms{scriptedRooms: newScriptedRooms(), answers: map[string][]byte{}}
	receiver := newRoomNode(t, pki, "receiver.test", 53)
	receiver.start(t, pki, counting)
	sender := newRoomNode(t, pki, "sender.test", 54)
	sender.start(t, pki, newScriptedRooms())
	linkNodes(receiver, sender)
	const copies = 8
	answers := make([]map[string]string, copies)
	errs := make([]error, copies)
	var wg sync.WaitGroup
	for i := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = sender.client.SendTransaction(context.Background(), "receiver.test", "same", nil, nil)
		}()
	}
	wg.Wait()
	for i := range copies {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if answers[i]["$a"] != "" || answers[i]["$b"] != "rejected for the test" || len(answers[i]) != 2 {
			t.Fatalf("copy %d answered %v", i, answers[i])
		}
	}
	if n := counting.processed.Load(); n != 1 {
		t.Fatalf("the transaction was processed %d times, want once", n)
	}
}
