package hostapi_test

import (
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/hostapi"
)

// TestServer_BadInput sends every kind of bad request the issue lists to
// the routes it applies to: each must be answered with its Matrix error
// and leave the store as it was. It runs twice: with Config.ServerName,
// where the host API refuses users and aliases of other servers itself,
// and without, where the host must.
func TestServer_BadInput(t *testing.T) {
	t.Run("server name known", func(t *testing.T) { testBadInput(t, ourName) })
	t.Run("server name unknown", func(t *testing.T) { testBadInput(t, "") })
}

func testBadInput(t *testing.T, serverName string) {
	n := openNode(t, t.TempDir(), "127.0.0.1:0", func(c *hostapi.Config) { c.ServerName = serverName })
	n.register(alice, bob) // carol is not registered
	roomID := n.createRoom(alice, map[string]any{"alias": "#taken:hs.test"})
	msgID := n.send(roomID, alice, "hello", "")
	room := "/_ferry/v1/rooms/" + esc(roomID)
	unknownRoom := "/_ferry/v1/rooms/" + esc("!unknown:hs.test")
	msg := func(sender string) map[string]any {
		return map[string]any{"sender": sender, "type": "m.room.message", "content": map[string]any{"body": "x"}}
	}

	cases := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		code   string
	}{
		// Not JSON, wrong shapes, missing fields.
		{"send not JSON", "POST", room + "/send", `{"sender": "@alice:hs.test",`, 400, "M_NOT_JSON"},
		{"send empty body", "POST", room + "/send", ``, 400, "M_NOT_JSON"},
		{"send trailing garbage", "POST", room + "/send", `{} x`, 400, "M_NOT_JSON"},
		{"send array body", "POST", room + "/send", `[]`, 400, "M_BAD_JSON"},
		{"send sender not a string", "POST", room + "/send", map[string]any{"sender": 5, "type": "m.room.message", "content": map[string]any{}}, 400, "M_BAD_JSON"},
		{"send content not an object", "POST", room + "/send", map[string]any{"sender": alice, "type": "m.room.message", "content": "hi"}, 400, "M_BAD_JSON"},
		{"send missing type", "POST", room + "/send", map[string]any{"sender": alice, "content": map[string]any{}}, 400, "M_BAD_JSON"},
		{"send missing content", "POST", room + "/send", map[string]any{"sender": alice, "type": "m.room.message"}, 400, "M_BAD_JSON"},
		{"send float in content", "POST", room + "/send", `{"sender": "@alice:hs.test", "type": "m.room.message", "content": {"n": 1.5}}`, 400, "M_BAD_JSON"},
		{"send huge integer in content", "POST", room + "/send", `{"sender": "@alice:hs.test", "type": "m.room.message", "content": {"a": [9007199254740992]}}`, 400, "M_BAD_JSON"},
		{"send txn_id not a string", "POST", room + "/send", map[string]any{"sender": alice, "type": "m", "content": map[string]any{}, "txn_id": 3}, 400, "M_BAD_JSON"},
		{"send empty type", "POST", room + "/send", map[string]any{"sender": alice, "type": "", "content": map[string]any{}}, 400, "M_INVALID_PARAM"},
		{"create creator missing", "POST", "/_ferry/v1/rooms", map[string]any{"name": "x"}, 400, "M_BAD_JSON"},
		{"create invite not a list", "POST", "/_ferry/v1/rooms", map[string]any{"creator": alice, "invite": bob}, 400, "M_BAD_JSON"},
		{"typing missing typing", "POST", room + "/typing", map[string]any{"user_id": alice}, 400, "M_BAD_JSON"},
		{"typing typing not a bool", "POST", room + "/typing", map[string]any{"user_id": alice, "typing": "yes"}, 400, "M_BAD_JSON"},
		{"typing timeout negative", "POST", room + "/typing", map[string]any{"user_id": alice, "typing": true, "timeout_ms": -1}, 400, "M_INVALID_PARAM"},
		{"receipt missing event", "POST", room + "/receipt", map[string]any{"user_id": alice}, 400, "M_BAD_JSON"},
		{"state content missing", "PUT", room + "/state/m.room.topic", map[string]any{"sender": alice}, 400, "M_BAD_JSON"},
		{"user profile not an object", "PUT", "/_ferry/v1/users/" + esc(carol), `"carol"`, 400, "M_BAD_JSON"},
		{"alias room_id missing", "PUT", "/_ferry/v1/aliases/" + esc("#new:hs.test"), map[string]any{}, 400, "M_BAD_JSON"},

		// IDs that do not parse, users and aliases that are not ours.
		{"bad room ID", "POST", "/_ferry/v1/rooms/" + esc("lobby") + "/send", msg(alice), 400, "M_INVALID_PARAM"},
		{"bad sender", "POST", room + "/send", msg("alice"), 400, "M_INVALID_PARAM"},
		{"sender not local", "POST", room + "/send", msg("@alice:other.test"), 400, "M_INVALID_PARAM"},
		{"creator not local", "POST", "/_ferry/v1/rooms", map[string]any{"creator": "@alice:other.test"}, 400, "M_INVALID_PARAM"},
		{"put user not local", "PUT", "/_ferry/v1/users/" + esc("@dave:other.test"), map[string]any{}, 400, "M_INVALID_PARAM"},
		{"get user not local", "GET", "/_ferry/v1/users/" + esc("@dave:other.test"), nil, 400, "M_INVALID_PARAM"},
		{"bad user ID", "PUT", "/_ferry/v1/users/dave", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"join user not local", "POST", room + "/join", map[string]any{"user_id": "@dave:other.test"}, 400, "M_INVALID_PARAM"},
		{"join bad via", "POST", room + "/join", map[string]any{"user_id": bob, "via": []string{"bad server!"}}, 400, "M_INVALID_PARAM"},
		{"join bad alias", "POST", "/_ferry/v1/rooms/" + esc("#nocolon") + "/join", map[string]any{"user_id": bob}, 400, "M_INVALID_PARAM"},
		{"invite bad invitee", "POST", room + "/invite", map[string]any{"sender": alice, "user_id": "bob"}, 400, "M_INVALID_PARAM"},
		{"kick sender not local", "POST", room + "/kick", map[string]any{"sender": "@x:other.test", "user_id": bob}, 400, "M_INVALID_PARAM"},
		{"redact bad event ID", "POST", room + "/redact/" + esc("not-an-event"), map[string]any{"sender": alice}, 400, "M_INVALID_PARAM"},
		{"receipt bad event ID", "POST", room + "/receipt", map[string]any{"user_id": alice, "event_id": "nope"}, 400, "M_INVALID_PARAM"},
		{"create unknown preset", "POST", "/_ferry/v1/rooms", map[string]any{"creator": alice, "preset": "trusted_private_chat"}, 400, "M_INVALID_PARAM"},
		{"create alias not ours", "POST", "/_ferry/v1/rooms", map[string]any{"creator": alice, "alias": "#x:other.test"}, 400, "M_INVALID_PARAM"},
		{"create bad invitee", "POST", "/_ferry/v1/rooms", map[string]any{"creator": alice, "invite": []string{"bob"}}, 400, "M_INVALID_PARAM"},
		{"put alias not ours", "PUT", "/_ferry/v1/aliases/" + esc("#x:other.test"), map[string]any{"room_id": roomID}, 400, "M_INVALID_PARAM"},
		{"put alias bad room", "PUT", "/_ferry/v1/aliases/" + esc("#new:hs.test"), map[string]any{"room_id": "lobby"}, 400, "M_INVALID_PARAM"},
		{"messages bad dir", "GET", room + "/messages?dir=up", nil, 400, "M_INVALID_PARAM"},
		{"messages limit zero", "GET", room + "/messages?limit=0", nil, 400, "M_INVALID_PARAM"},
		{"messages limit too big", "GET", room + "/messages?limit=1001", nil, 400, "M_INVALID_PARAM"},
		{"messages limit not a number", "GET", room + "/messages?limit=ten", nil, 400, "M_INVALID_PARAM"},
		{"events bad since", "GET", "/_ferry/v1/events?since=abc", nil, 400, "M_INVALID_PARAM"},
		{"events negative since", "GET", "/_ferry/v1/events?since=-1", nil, 400, "M_INVALID_PARAM"},
		{"events timeout too long", "GET", "/_ferry/v1/events?timeout_ms=60001", nil, 400, "M_INVALID_PARAM"},
		{"events limit too big", "GET", "/_ferry/v1/events?limit=1001", nil, 400, "M_INVALID_PARAM"},

		// Room versions.
		{"create unknown room version", "POST", "/_ferry/v1/rooms", map[string]any{"creator": alice, "room_version": "99"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"create room version 1", "POST", "/_ferry/v1/rooms", map[string]any{"creator": alice, "room_version": "1"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},

		// Unknown things.
		{"send unknown room", "POST", unknownRoom + "/send", msg(alice), 404, "M_NOT_FOUND"},
		{"state of unknown room", "GET", unknownRoom + "/state", nil, 404, "M_NOT_FOUND"},
		{"summary of unknown room", "GET", unknownRoom, nil, 404, "M_NOT_FOUND"},
		{"messages of unknown room", "GET", unknownRoom + "/messages", nil, 404, "M_NOT_FOUND"},
		{"invite in unknown room", "POST", unknownRoom + "/invite", map[string]any{"sender": alice, "user_id": bob}, 404, "M_NOT_FOUND"},
		{"redact unknown event", "POST", room + "/redact/" + esc("$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), map[string]any{"sender": alice}, 404, "M_NOT_FOUND"},
		{"get unregistered user", "GET", "/_ferry/v1/users/" + esc(carol), nil, 404, "M_NOT_FOUND"},
		{"get unknown alias", "GET", "/_ferry/v1/aliases/" + esc("#nothing:hs.test"), nil, 404, "M_NOT_FOUND"},
		{"delete unknown alias", "DELETE", "/_ferry/v1/aliases/" + esc("#nothing:hs.test"), nil, 404, "M_NOT_FOUND"},

		// Who may act.
		{"send by unregistered user", "POST", room + "/send", msg(carol), 403, "M_FORBIDDEN"},
		{"create by unregistered user", "POST", "/_ferry/v1/rooms", map[string]any{"creator": carol}, 403, "M_FORBIDDEN"},
		{"send by sender not joined", "POST", room + "/send", msg(bob), 403, "M_FORBIDDEN"},
		{"state by sender not joined", "PUT", room + "/state/m.room.topic", map[string]any{"sender": bob, "content": map[string]any{"topic": "x"}}, 403, "M_FORBIDDEN"},
		{"invite by sender not joined", "POST", room + "/invite", map[string]any{"sender": bob, "user_id": carol}, 403, "M_FORBIDDEN"},
		{"redact by sender not joined", "POST", room + "/redact/" + esc(msgID), map[string]any{"sender": bob}, 403, "M_FORBIDDEN"},
		{"kick by sender not joined", "POST", room + "/kick", map[string]any{"sender": bob, "user_id": alice}, 403, "M_FORBIDDEN"},
		{"join private room uninvited", "POST", room + "/join", map[string]any{"user_id": bob}, 403, "M_FORBIDDEN"},

		// Conflicts and sizes.
		{"put alias taken", "PUT", "/_ferry/v1/aliases/" + esc("#taken:hs.test"), map[string]any{"room_id": roomID}, 409, "M_ROOM_IN_USE"},
		{"create alias taken", "POST", "/_ferry/v1/rooms", map[string]any{"creator": alice, "alias": "#taken:hs.test"}, 409, "M_ROOM_IN_USE"},
		{"content too large for an event", "POST", room + "/send", `{"sender": "@alice:hs.test", "type": "m.room.message", "content": {"body": "` + strings.Repeat("x", 70000) + `"}}`, 400, "M_TOO_LARGE"},
		{"body too large", "POST", room + "/send", `{"sender": "@alice:hs.test", "type": "m.room.message", "content": {"body": "` + strings.Repeat("x", 1<<20) + `"}}`, 413, "M_TOO_LARGE"},
	}
	for _, c := range cases {
		if serverName == "" && c.name == "get user not local" {
			// The host itself looks the user up without asking whose
			// it is: not registered here.
			c.status, c.code = 404, "M_NOT_FOUND"
		}
		t.Run(c.name, func(t *testing.T) {
			n := n.on(t)
			before := n.snapshot("#taken:hs.test", "#new:hs.test", "#x:other.test")
			r := n.request(c.method, c.path, c.body)
			if r.status != c.status || r.errcode(t) != c.code {
				t.Errorf("%s %s: %d %s, want %d %s", c.method, c.path, r.status, r.body, c.status, c.code)
			}
			if r.field(t, "error") == "" {
				t.Errorf("no error message: %s", r.body)
			}
			if after := n.snapshot("#taken:hs.test", "#new:hs.test", "#x:other.test"); !before.equal(after) {
				t.Errorf("the refused request changed the store: %+v -> %+v", before, after)
			}
		})
	}
}
