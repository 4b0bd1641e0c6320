package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// startBigRoom serves a synthetic room for the test.
func startBigRoom(tb testing.TB, version string, members, servers int) *bigRoomServe {
	tb.Helper()
	v, err := rooms.LookupVersion(version)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := serveBigRoom(bigRoomConfig{
		Spec: roomSpec{Version: v, Members: members, Admins: 3, Moderators: 5, ProfileChanges: 0.1, Messages: 20,
			Name: "big", Topic: "test"},
		Servers: servers, Bind: "127.0.0.1", Insecure: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	return b
}

// TestBigRoom_FerryJoins: a real Ferry engine joins a synthetic room of
// 200 members spread over three resident servers (by room ID in version
// 12, by the room's alias in version 10); its state then holds every
// member, the room's name, alias and power levels, and the resident holds
// Ferry's join.
func TestBigRoom_FerryJoins(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			b := startBigRoom(t, version, 200, 3)
			if b.Ready.Members != 200 || len(b.Ready.Servers) != 3 {
				t.Fatalf("ready %+v", b.Ready)
			}
			tg := startTarget(t)
			ctx := testContext(t)
			user := "@joiner:" + tg.Name
			var join *rooms.Event
			var err error
			if version == "10" {
				// By the canonical alias: the resident answers the directory.
				join, err = tg.Engine.JoinRoomByAlias(ctx, b.Ready.Alias, user)
			} else {
				join, err = tg.Engine.JoinRoom(ctx, b.Ready.RoomID, user, []string{b.Ready.Servers[0]})
			}
			if err != nil {
				t.Fatal(err)
			}
			members, err := tg.DB.Members(ctx, b.Ready.RoomID, "join")
			if err != nil {
				t.Fatal(err)
			}
			if len(members) != 201 || !slices.Contains(members, user) {
				t.Fatalf("the target's room has %d joined members, want 201 with %s", len(members), user)
			}
			b.Resident.mu.RLock()
			want := memberIDs(b.Resident.state)
			b.Resident.mu.RUnlock()
			slices.Sort(members)
			if !slices.Equal(members, want) {
				t.Fatalf("members differ between the target and the resident")
			}
			state, err := tg.DB.CurrentState(ctx, b.Ready.RoomID)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []store.StateKey{{Type: "m.room.name"}, {Type: "m.room.power_levels"}, {Type: "m.room.join_rules"}, {Type: "m.room.topic"}, {Type: "m.room.canonical_alias"}} {
				b.Resident.mu.RLock()
				wantID := b.Resident.state[rooms.StateTuple{Type: k.Type, StateKey: k.StateKey}].EventID()
				b.Resident.mu.RUnlock()
				if state[k] != wantID {
					t.Errorf("the target's %s is %q, the resident's %s", k.Type, state[k], wantID)
				}
			}
			// A member who changed profile has the second join in state.
			changed, _ := userOf(10, residentSigners(b))
			se, err := tg.DB.Event(ctx, state[store.StateKey{Type: "m.room.member", StateKey: changed}])
			if err != nil {
				t.Fatal(err)
			}
			if se.Event.Content()["displayname"] != "Member 10 (away)" {
				t.Errorf("member 10's state event is %s", se.Event.JSON())
			}
			b.Resident.mu.RLock()
			_, accepted := b.Resident.byID[join.EventID()]
			b.Resident.mu.RUnlock()
			if !accepted {
				t.Error("the resident does not hold the target's join")
			}
		})
	}
}

// residentSigners returns the resident servers' signing keys, to name members as the
// builder did.
func residentSigners(b *bigRoomServe) []rooms.SigningKey {
	out := make([]rooms.SigningKey, len(b.servers))
	for i, s := range b.servers {
		out[i] = s.Signer
	}
	return out
}

// TestBigRoom_ResidentEndpoints joins through the resident as a remote
// server of our own, with omit_members=true (partial state) and without,
// and reads the room with /state_ids, /state, /event, /event_auth,
// /get_missing_events and /backfill.
func TestBigRoom_ResidentEndpoints(t *testing.T) {
	t.Parallel()
	b := startBigRoom(t, "12", 100, 2)
	ctx := testContext(t)
	cert, err := selfSignedCert("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	hc := httpsClient(true, 2)
	resident := b.Ready.Servers[1]
	roomID := b.Ready.RoomID
	v, _ := rooms.LookupVersion("12")

	joinOnce := func(omit bool) (map[string]json.RawMessage, *rooms.Event, *fakeServer) {
		t.Helper()
		s, err := startFakeServer("127.0.0.1", cert)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		user := "@probe:" + s.Name
		raw, err := fedRequest(ctx, hc, s.Signer, resident, http.MethodGet,
			"/_matrix/federation/v1/make_join/"+url.PathEscape(roomID)+"/"+url.PathEscape(user), url.Values{"ver": {"10", "12"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var answer struct {
			RoomVersion string          `json:"room_version"`
			Event       json.RawMessage `json:"event"`
		}
		if err := json.Unmarshal(raw, &answer); err != nil || answer.RoomVersion != "12" {
			t.Fatalf("make_join answer %s (%v)", raw, err)
		}
		tmpl, err := joinTemplate(answer.Event, roomID, user)
		if err != nil {
			t.Fatal(err)
		}
		join, err := rooms.BuildEvent(v, tmpl, s.Signer)
		if err != nil {
			t.Fatal(err)
		}
		q := url.Values{}
		if omit {
			q.Set("omit_members", "true")
		}
		raw, err = fedRequest(ctx, hc, s.Signer, resident, http.MethodPut,
			"/_matrix/federation/v2/send_join/"+url.PathEscape(roomID)+"/"+url.PathEscape(join.EventID()), q, join.JSON())
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]json.RawMessage
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatal(err)
		}
		return body, join, s
	}
	parse := func(raw json.RawMessage) []*rooms.Event {
		t.Helper()
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			t.Fatal(err)
		}
		out := make([]*rooms.Event, len(list))
		for i, r := range list {
			if out[i], err = rooms.ParseEvent(v, r); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	countMembers := func(evs []*rooms.Event) int {
		n := 0
		for _, ev := range evs {
			if ev.Type() == "m.room.member" {
				n++
			}
		}
		return n
	}

	full, _, _ := joinOnce(false)
	if string(full["members_omitted"]) != "false" {
		t.Errorf("members_omitted %s without omit_members", full["members_omitted"])
	}
	if n := countMembers(parse(full["state"])); n != 100 {
		t.Errorf("full state holds %d members, want 100", n)
	}

	partial, join, probe := joinOnce(true)
	if string(partial["members_omitted"]) != "true" {
		t.Errorf("members_omitted %s with omit_members=true", partial["members_omitted"])
	}
	state := parse(partial["state"])
	if n := countMembers(state); n != 0 || len(state) < 6 {
		t.Errorf("partial state: %d events, %d members", len(state), n)
	}
	var servers []string
	json.Unmarshal(partial["servers_in_room"], &servers)
	for _, s := range b.Ready.Servers {
		if !slices.Contains(servers, s) {
			t.Errorf("servers_in_room %v lacks resident %s", servers, s)
		}
	}
	inState := map[string]bool{}
	for _, ev := range state {
		inState[ev.EventID()] = true
	}
	for _, ev := range parse(partial["auth_chain"]) {
		if inState[ev.EventID()] {
			t.Errorf("partial auth chain repeats state event %s", ev.EventID())
		}
	}

	// Reads, as the first resident server, by the probe that joined last.
	s, err := startFakeServer("127.0.0.1", cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	get := func(method, path string, q url.Values, body any) map[string]json.RawMessage {
		t.Helper()
		raw, err := fedRequest(ctx, hc, s.Signer, b.Ready.Servers[0], method, path, q, body)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		var out map[string]json.RawMessage
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	esc := url.PathEscape
	ids := get(http.MethodGet, "/_matrix/federation/v1/state_ids/"+esc(roomID), url.Values{"event_id": {join.EventID()}}, nil)
	var pduIDs []string
	json.Unmarshal(ids["pdu_ids"], &pduIDs)
	// The state before the last join: every member and the first probe.
	if len(pduIDs) != len(parse(full["state"]))+1 {
		t.Errorf("state_ids at the probe's join: %d IDs, want %d", len(pduIDs), len(parse(full["state"]))+1)
	}
	st := get(http.MethodGet, "/_matrix/federation/v1/state/"+esc(roomID), url.Values{"event_id": {join.EventID()}}, nil)
	if got := len(parse(st["pdus"])); got != len(pduIDs) {
		t.Errorf("/state has %d PDUs, /state_ids %d", got, len(pduIDs))
	}
	ev := get(http.MethodGet, "/_matrix/federation/v1/event/"+esc(join.EventID()), nil, nil)
	if got := parse(ev["pdus"]); len(got) != 1 || got[0].EventID() != join.EventID() {
		t.Errorf("/event answer %s", ev["pdus"])
	}
	auth := get(http.MethodGet, "/_matrix/federation/v1/event_auth/"+esc(roomID)+"/"+esc(join.EventID()), nil, nil)
	if got := parse(auth["auth_chain"]); len(got) < 3 {
		t.Errorf("event_auth returned %d events", len(got))
	}
	b.Resident.mu.RLock()
	last := b.Resident.events[len(b.Resident.events)-1]
	earlier := b.Resident.events[len(b.Resident.events)-8]
	b.Resident.mu.RUnlock()
	missing := get(http.MethodPost, "/_matrix/federation/v1/get_missing_events/"+esc(roomID), nil,
		map[string]any{"earliest_events": []string{earlier.EventID()}, "latest_events": []string{last.EventID()}, "limit": 10})
	if got := parse(missing["events"]); len(got) != 6 || got[0].Depth() > got[5].Depth() {
		t.Errorf("get_missing_events returned %d events, want the 6 between, oldest first", len(got))
	}
	back := get(http.MethodGet, "/_matrix/federation/v1/backfill/"+esc(roomID), url.Values{"v": {last.EventID()}, "limit": {"5"}}, nil)
	if got := parse(back["pdus"]); len(got) != 5 || got[0].EventID() != last.EventID() {
		t.Errorf("backfill returned %d events", len(got))
	}
	// /send: the probe's message after its join is accepted; one from a
	// user who never joined is refused with a per-PDU error.
	msg := func(sender string) *rooms.Event {
		ev, err := rooms.BuildEvent(v, rooms.EventTemplate{
			Type: "m.room.message", Sender: sender, RoomID: roomID, Content: map[string]any{"msgtype": "m.text", "body": "hi"},
			PrevEvents: []string{join.EventID()}, AuthEvents: []string{join.AuthEvents()[0], join.EventID()}, Depth: join.Depth() + 1, OriginServerTS: 1,
		}, probe.Signer)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	good, bad := msg(join.Sender()), msg("@stranger:"+probe.Name)
	raw, err := fedRequest(ctx, hc, probe.Signer, b.Ready.Servers[0], http.MethodPut, "/_matrix/federation/v1/send/t1", nil,
		map[string]any{"origin": probe.Name, "origin_server_ts": 1, "pdus": []json.RawMessage{good.JSON(), bad.JSON()}})
	if err != nil {
		t.Fatal(err)
	}
	var sent struct {
		PDUs map[string]struct {
			Error *string `json:"error"`
		} `json:"pdus"`
	}
	if err := json.Unmarshal(raw, &sent); err != nil {
		t.Fatal(err)
	}
	if r, ok := sent.PDUs[good.EventID()]; !ok || r.Error != nil {
		t.Errorf("the member's message: %s", raw)
	}
	if r, ok := sent.PDUs[bad.EventID()]; !ok || r.Error == nil {
		t.Errorf("the stranger's message: %s", raw)
	}

	dir := get(http.MethodGet, "/_matrix/federation/v1/query/directory", url.Values{"room_alias": {b.Ready.Alias}}, nil)
	if string(dir["room_id"]) != `"`+roomID+`"` {
		t.Errorf("directory answer for %s: %s", b.Ready.Alias, dir["room_id"])
	}
	if _, err := fedRequest(ctx, hc, s.Signer, b.Ready.Servers[0], http.MethodGet, "/_matrix/federation/v1/query/directory", url.Values{"room_alias": {"#other:" + b.Ready.Servers[0]}}, nil); err == nil {
		t.Error("directory answered an unknown alias")
	}

	// Errors: an unknown room, an unsigned request.
	if _, err := fedRequest(ctx, hc, s.Signer, b.Ready.Servers[0], http.MethodGet, "/_matrix/federation/v1/state_ids/"+esc("!nope:x"), url.Values{"event_id": {join.EventID()}}, nil); err == nil {
		t.Error("state_ids of an unknown room answered")
	}
	resp, err := hc.Get(fmt.Sprintf("https://%s/_matrix/federation/v1/event/%s", b.Ready.Servers[0], esc(join.EventID())))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned request answered %d", resp.StatusCode)
	}
}

// TestBigRoom_JoinViaHostAPI runs the bigroom command as a user would:
// it serves the room, asks the target (through its host API) to join a
// user, and reports the time and the target's peak RSS (here the test
// process's, as the target runs in it).
func TestBigRoom_JoinViaHostAPI(t *testing.T) {
	t.Parallel()
	tg := startTarget(t)
	base, token := tg.hostAPI(t)
	ctx := testContext(t)
	user := "@bigjoiner:" + tg.Name
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"bigroom", "--members", "150", "--servers", "2", "--insecure", "--json",
		"--join-via-host-api", base, "--host-token", token, "--user", user, "--target-pid", fmt.Sprint(os.Getpid())}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
	}
	dec := json.NewDecoder(&out)
	var ready bigRoomReady
	var joined bigRoomJoin
	if err := dec.Decode(&ready); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&joined); err != nil {
		t.Fatal(err)
	}
	if ready.Members != 150 || len(ready.Servers) != 2 || joined.RoomID != ready.RoomID || joined.User != user {
		t.Fatalf("ready %+v, joined %+v", ready, joined)
	}
	if joined.Members != 151 || joined.Seconds <= 0 || joined.TargetPeakRSSBytes <= 0 || joined.EventID == "" {
		t.Fatalf("joined %+v", joined)
	}
	members, err := tg.DB.Members(ctx, ready.RoomID, "join")
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 151 {
		t.Fatalf("the target holds %d members", len(members))
	}
	// Without --user the join cannot be asked for.
	if code := run(ctx, []string{"bigroom", "--join-via-host-api", base}, io.Discard, io.Discard); code != 2 {
		t.Errorf("--join-via-host-api without --user: exit %d", code)
	}
}

// TestBigRoom_Cache: a room built with --cache is written to the file;
// served again from it, it is the same room on the same server names with
// the same keys, and a Ferry engine can join it. A cache of another room
// shape is refused.
func TestBigRoom_Cache(t *testing.T) {
	t.Parallel()
	v, _ := rooms.LookupVersion("10")
	path := t.TempDir() + "/room.cache"
	cfg := bigRoomConfig{
		Spec:    roomSpec{Version: v, Members: 60, Admins: 2, Moderators: 2, ProfileChanges: 0.1, Messages: 5, Name: "cached", Topic: "t"},
		Servers: 2, Bind: "127.0.0.1", Insecure: true, Cache: path,
	}
	first, err := serveBigRoom(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if first.Ready.FromCache {
		t.Fatal("the first run says it read the cache")
	}
	firstEvents := len(first.Resident.events)
	first.Close()

	again, err := serveBigRoom(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(again.Close)
	if !again.Ready.FromCache || again.Ready.RoomID != first.Ready.RoomID || !slices.Equal(again.Ready.Servers, first.Ready.Servers) ||
		len(again.Resident.events) != firstEvents || again.Ready.Members != 60 {
		t.Fatalf("from the cache: %+v (first %+v)", again.Ready, first.Ready)
	}
	tg := startTarget(t)
	ctx := testContext(t)
	if _, err := tg.Engine.JoinRoom(ctx, again.Ready.RoomID, "@j:"+tg.Name, []string{again.Ready.Servers[1]}); err != nil {
		t.Fatal(err)
	}
	members, err := tg.DB.Members(ctx, again.Ready.RoomID, "join")
	if err != nil || len(members) != 61 {
		t.Fatalf("the target holds %d members (%v)", len(members), err)
	}

	other := cfg
	other.Spec.Members = 61
	if _, err := serveBigRoom(other); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("a cache of another room: %v", err)
	}
}
