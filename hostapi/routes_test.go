package hostapi_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/homeserver"
)

func TestServer_Auth(t *testing.T) {
	n := newNode(t)
	n.register(alice)
	before := n.snapshot()
	body := map[string]any{"creator": alice}
	cases := []struct {
		name   string
		header http.Header
		code   string
	}{
		{"no header", http.Header{}, "M_MISSING_TOKEN"},
		{"other scheme", http.Header{"Authorization": {"Basic " + testToken}}, "M_MISSING_TOKEN"},
		{"bearer without token", http.Header{"Authorization": {"Bearer"}}, "M_MISSING_TOKEN"},
		{"wrong token", http.Header{"Authorization": {"Bearer nope"}}, "M_UNKNOWN_TOKEN"},
		{"token prefix", http.Header{"Authorization": {"Bearer " + testToken[:5]}}, "M_UNKNOWN_TOKEN"},
		{"token with more", http.Header{"Authorization": {"Bearer " + testToken + "x"}}, "M_UNKNOWN_TOKEN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/_ferry/v1/rooms", "/_ferry/v1/nothing-here"} {
				r := n.requestWith(http.MethodPost, path, body, c.header)
				if r.status != http.StatusUnauthorized || r.errcode(t) != c.code {
					t.Errorf("POST %s: %d %s, want 401 %s", path, r.status, r.body, c.code)
				}
			}
		})
	}
	if after := n.snapshot(); !before.equal(after) {
		t.Error("a request without a valid token changed the store")
	}

	// Extra handlers need no token; everything else is routed after the
	// token check.
	if r := n.requestWith(http.MethodGet, "/healthz", nil, http.Header{}); r.status != http.StatusOK || string(r.body) != "ok" {
		t.Errorf("/healthz without token: %d %s", r.status, r.body)
	}
	if r := n.request(http.MethodGet, "/_ferry/v1/nothing-here", nil); r.status != http.StatusNotFound || r.errcode(t) != "M_UNRECOGNIZED" {
		t.Errorf("unknown path: %d %s, want 404 M_UNRECOGNIZED", r.status, r.body)
	}
	if r := n.request(http.MethodDelete, "/_ferry/v1/rooms", nil); r.status != http.StatusMethodNotAllowed || r.errcode(t) != "M_UNRECOGNIZED" {
		t.Errorf("wrong method: %d %s, want 405 M_UNRECOGNIZED", r.status, r.body)
	}
}

func TestServer_Users(t *testing.T) {
	n := newNode(t)
	var u homeserver.User
	n.must(http.MethodPut, "/_ferry/v1/users/"+esc(alice), map[string]any{"displayname": "Alice", "avatar_url": "mxc://hs.test/a"}).json(t, &u)
	if u != (homeserver.User{UserID: alice, DisplayName: "Alice", AvatarURL: "mxc://hs.test/a"}) {
		t.Errorf("PUT answered %+v", u)
	}
	n.register(bob)
	n.must(http.MethodGet, "/_ferry/v1/users/"+esc(alice), nil).json(t, &u)
	if u.DisplayName != "Alice" {
		t.Errorf("GET answered %+v", u)
	}
	// A second PUT updates the profile.
	n.must(http.MethodPut, "/_ferry/v1/users/"+esc(alice), map[string]any{"displayname": "Alice B."})
	n.must(http.MethodGet, "/_ferry/v1/users/"+esc(alice), nil).json(t, &u)
	if u.DisplayName != "Alice B." {
		t.Errorf("after update GET answered %+v", u)
	}

	var list struct {
		Users []homeserver.User `json:"users"`
	}
	n.must(http.MethodGet, "/_ferry/v1/users", nil).json(t, &list)
	var ids []string
	for _, u := range list.Users {
		ids = append(ids, u.UserID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{alice, bob}) {
		t.Errorf("users = %v", ids)
	}

	if r := n.must(http.MethodDelete, "/_ferry/v1/users/"+esc(bob), nil); string(r.body) != "{}" {
		t.Errorf("DELETE answered %s", r.body)
	}
	if r := n.request(http.MethodGet, "/_ferry/v1/users/"+esc(bob), nil); r.status != http.StatusNotFound || r.errcode(t) != "M_NOT_FOUND" {
		t.Errorf("GET deleted user: %d %s", r.status, r.body)
	}
	if r := n.request(http.MethodDelete, "/_ferry/v1/users/"+esc(bob), nil); r.status != http.StatusNotFound || r.errcode(t) != "M_NOT_FOUND" {
		t.Errorf("DELETE unknown user: %d %s", r.status, r.body)
	}
}

// TestServer_Rooms drives every room route once through its success.
func TestServer_Rooms(t *testing.T) {
	n := newNode(t)
	n.register(alice, bob, carol)
	ctx := context.Background()
	start, err := n.db.HostLogHead(ctx)
	if err != nil {
		t.Fatal(err)
	}

	roomID := n.createRoom(alice, map[string]any{
		"room_version": "10", "preset": "public_chat", "name": "Lobby", "topic": "hello",
		"alias": "#lobby:hs.test", "invite": []string{bob},
	})
	var summary homeserver.RoomSummary
	n.must(http.MethodGet, "/_ferry/v1/rooms/"+esc(roomID), nil).json(t, &summary)
	if summary.RoomID != roomID || summary.RoomVersion != "10" || summary.Name != "Lobby" || summary.Topic != "hello" ||
		summary.CanonicalAlias != "#lobby:hs.test" || !slices.Equal(summary.JoinedLocalUsers, []string{alice}) || summary.JoinedMembers != 1 {
		t.Errorf("summary = %+v", summary)
	}
	var list struct {
		Rooms []homeserver.RoomSummary `json:"rooms"`
	}
	n.must(http.MethodGet, "/_ferry/v1/rooms", nil).json(t, &list)
	if len(list.Rooms) != 1 || list.Rooms[0].RoomID != roomID {
		t.Errorf("rooms = %+v", list.Rooms)
	}

	// Bob, invited, joins through the alias (escaped '#').
	var joined map[string]string
	n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc("#lobby:hs.test")+"/join", map[string]any{"user_id": bob}).json(t, &joined)
	if joined["room_id"] != roomID || !strings.HasPrefix(joined["event_id"], "$") {
		t.Errorf("join answered %v", joined)
	}
	// Carol joins the public room by ID.
	n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc(roomID)+"/join", map[string]any{"user_id": carol, "via": []string{"hs.test"}})

	msgID := n.send(roomID, alice, "hi", "")
	stateID := n.must(http.MethodPut, "/_ferry/v1/rooms/"+esc(roomID)+"/state/m.room.topic", map[string]any{"sender": alice, "content": map[string]any{"topic": "new topic"}}).field(t, "event_id")
	keyed := n.must(http.MethodPut, "/_ferry/v1/rooms/"+esc(roomID)+"/state/org.example.thing/"+esc("a/b c"), map[string]any{"sender": alice, "content": map[string]any{"n": 1}}).field(t, "event_id")
	redactID := n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc(roomID)+"/redact/"+esc(msgID), map[string]any{"sender": alice, "reason": "oops"}).field(t, "event_id")
	for _, id := range []string{msgID, stateID, keyed, redactID} {
		if !strings.HasPrefix(id, "$") {
			t.Fatalf("event ID %q", id)
		}
	}
	if r := n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc(roomID)+"/typing", map[string]any{"user_id": alice, "typing": true, "timeout_ms": 5000}); string(r.body) != "{}" {
		t.Errorf("typing answered %s", r.body)
	}
	n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc(roomID)+"/typing", map[string]any{"user_id": alice, "typing": false})
	if r := n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc(roomID)+"/receipt", map[string]any{"user_id": bob, "event_id": stateID}); string(r.body) != "{}" {
		t.Errorf("receipt answered %s", r.body)
	}

	// State holds the keyed state event under its decoded key.
	var state struct {
		State []map[string]any `json:"state"`
	}
	n.must(http.MethodGet, "/_ferry/v1/rooms/"+esc(roomID)+"/state", nil).json(t, &state)
	found := false
	for _, ev := range state.State {
		if ev["type"] == "org.example.thing" && ev["state_key"] == "a/b c" && ev["event_id"] == keyed {
			found = true
		}
	}
	if !found {
		t.Errorf("state lacks the keyed event %s: %v", keyed, state.State)
	}

	// Messages backwards, newest first, in pages; then forwards.
	var page struct {
		Chunk []map[string]any `json:"chunk"`
		Start string           `json:"start"`
		End   string           `json:"end"`
	}
	n.must(http.MethodGet, "/_ferry/v1/rooms/"+esc(roomID)+"/messages?limit=2", nil).json(t, &page)
	if len(page.Chunk) != 2 || page.Chunk[0]["event_id"] != redactID || page.End == "" {
		t.Fatalf("first page = %+v", page)
	}
	var seen []any
	for from := ""; ; {
		n.must(http.MethodGet, "/_ferry/v1/rooms/"+esc(roomID)+"/messages?dir=f&limit=3&from="+from, nil).json(t, &page)
		if page.Start != from {
			t.Errorf("start = %q, want %q", page.Start, from)
		}
		for _, ev := range page.Chunk {
			seen = append(seen, ev["event_id"])
		}
		if page.End == "" {
			break
		}
		from = page.End
		page.End = ""
	}
	if len(seen) == 0 || !slices.Contains(seen, any(msgID)) || seen[len(seen)-1] != redactID {
		t.Errorf("forward paging saw %v", seen)
	}

	// Moderation: kick carol, ban her, unban her; bob leaves; carol
	// knocks after the room turns to knocking.
	for _, op := range []string{"kick", "ban", "unban"} {
		n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc(roomID)+"/"+op, map[string]any{"sender": alice, "user_id": carol, "reason": op})
	}
	n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc(roomID)+"/leave", map[string]any{"user_id": bob, "reason": "bye"})
	n.must(http.MethodPut, "/_ferry/v1/rooms/"+esc(roomID)+"/state/m.room.join_rules/", map[string]any{"sender": alice, "content": map[string]any{"join_rule": "knock"}})
	knock := n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc(roomID)+"/knock", map[string]any{"user_id": carol, "reason": "let me in"}).field(t, "event_id")
	invite := n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc(roomID)+"/invite", map[string]any{"sender": alice, "user_id": carol}).field(t, "event_id")
	if knock == "" || invite == "" {
		t.Fatal("knock or invite gave no event ID")
	}
	n.must(http.MethodGet, "/_ferry/v1/rooms/"+esc(roomID), nil).json(t, &summary)
	if !slices.Equal(summary.JoinedLocalUsers, []string{alice}) || summary.Topic != "new topic" {
		t.Errorf("summary after moderation = %+v", summary)
	}

	// Aliases.
	n.must(http.MethodPut, "/_ferry/v1/aliases/"+esc("#other:hs.test"), map[string]any{"room_id": roomID})
	var alias struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	n.must(http.MethodGet, "/_ferry/v1/aliases/"+esc("#other:hs.test"), nil).json(t, &alias)
	if alias.RoomID != roomID || !slices.Contains(alias.Servers, ourName) {
		t.Errorf("alias = %+v", alias)
	}
	n.must(http.MethodDelete, "/_ferry/v1/aliases/"+esc("#other:hs.test"), nil)
	if r := n.request(http.MethodGet, "/_ferry/v1/aliases/"+esc("#other:hs.test"), nil); r.status != http.StatusNotFound || r.errcode(t) != "M_NOT_FOUND" {
		t.Errorf("deleted alias: %d %s", r.status, r.body)
	}

	// Destinations: no other server is in the room.
	if r := n.must(http.MethodGet, "/_ferry/v1/destinations", nil); string(r.body) != `{"destinations":[]}` {
		t.Errorf("destinations = %s", r.body)
	}

	// Everything above is in the stream, events with their IDs.
	page2 := n.poll(homeserver.StreamToken(start), 0)
	ids := map[string]bool{}
	for _, it := range page2.Items {
		if it.Kind == "event" {
			if it.RoomID != roomID {
				t.Errorf("item %s: room %s", it.Pos, it.RoomID)
			}
			ids[it.eventField(t, "event_id")] = true
		}
	}
	for _, id := range []string{msgID, stateID, keyed, redactID, joined["event_id"], knock, invite} {
		if !ids[id] {
			t.Errorf("stream lacks event %s", id)
		}
	}
}

func TestServer_CreateRoomFailedInvites(t *testing.T) {
	n := newNode(t)
	n.register(alice)
	// Inviting a user of a server that does not exist fails; the room is
	// made all the same.
	r := n.must(http.MethodPost, "/_ferry/v1/rooms", map[string]any{"creator": alice, "invite": []string{"@zed:unreachable.invalid"}})
	var answer struct {
		RoomID        string            `json:"room_id"`
		FailedInvites map[string]string `json:"failed_invites"`
	}
	r.json(t, &answer)
	if answer.RoomID == "" || answer.FailedInvites["@zed:unreachable.invalid"] == "" {
		t.Errorf("answer = %s", r.body)
	}
	n.must(http.MethodGet, "/_ferry/v1/rooms/"+esc(answer.RoomID), nil)
}

// TestServer_ServerSideFailures: failures that are not the request's
// fault. Ours are 500 M_UNKNOWN with their details only in the log; other
// servers' are 502 with the reason.
func TestServer_ServerSideFailures(t *testing.T) {
	n := newNode(t)
	n.register(alice)

	// This test server has no federation client: asking another server
	// for its alias fails as if every server were down.
	r := n.request(http.MethodGet, "/_ferry/v1/aliases/"+esc("#room:other.test"), nil)
	if r.status != http.StatusBadGateway || r.errcode(t) != "M_UNKNOWN" || !strings.Contains(r.field(t, "error"), "#room:other.test") {
		t.Errorf("remote alias without federation: %d %s, want 502 M_UNKNOWN naming the alias", r.status, r.body)
	}

	// The store closed under the server: an internal error, not echoed.
	if err := n.db.Close(); err != nil {
		t.Fatal(err)
	}
	n.dbClosed = true
	r = n.request(http.MethodGet, "/_ferry/v1/users", nil)
	if r.status != http.StatusInternalServerError || r.errcode(t) != "M_UNKNOWN" || r.field(t, "error") != "Internal server error" {
		t.Errorf("store closed: %d %s, want 500 M_UNKNOWN without details", r.status, r.body)
	}
}
