package rooms

import (
	"testing"
)

// TestRedact covers every rule of both rule sets: each case gives the
// input and the redacted form under version 10 (RedactionV9) and version
// 12 (RedactionV11), as canonical JSON.
func TestRedact(t *testing.T) {
	cases := []struct {
		name     string
		in       string
		v10, v12 string
	}{
		{
			name: "top-level keys kept by both",
			in:   `{"event_id":"$e","type":"t","room_id":"!r:x","sender":"@s:x","state_key":"k","content":{},"hashes":{"sha256":"h"},"signatures":{"x":{}},"depth":1,"prev_events":["$p"],"auth_events":["$a"],"origin_server_ts":5}`,
			v10:  `{"auth_events":["$a"],"content":{},"depth":1,"event_id":"$e","hashes":{"sha256":"h"},"origin_server_ts":5,"prev_events":["$p"],"room_id":"!r:x","sender":"@s:x","signatures":{"x":{}},"state_key":"k","type":"t"}`,
			v12:  `{"auth_events":["$a"],"content":{},"depth":1,"event_id":"$e","hashes":{"sha256":"h"},"origin_server_ts":5,"prev_events":["$p"],"room_id":"!r:x","sender":"@s:x","signatures":{"x":{}},"state_key":"k","type":"t"}`,
		},
		{
			name: "origin, membership and prev_state kept only by v10",
			in:   `{"type":"t","content":{},"origin":"x","membership":"join","prev_state":[]}`,
			v10:  `{"content":{},"membership":"join","origin":"x","prev_state":[],"type":"t"}`,
			v12:  `{"content":{},"type":"t"}`,
		},
		{
			name: "unknown top-level keys, unsigned and redacts dropped",
			in:   `{"type":"m.room.redaction","content":{},"unsigned":{"age":1},"redacts":"$x","custom":true}`,
			v10:  `{"content":{},"type":"m.room.redaction"}`,
			v12:  `{"content":{},"type":"m.room.redaction"}`,
		},
		{
			name: "missing content becomes empty",
			in:   `{"type":"t"}`,
			v10:  `{"content":{},"type":"t"}`,
			v12:  `{"content":{},"type":"t"}`,
		},
		{
			name: "content that is not an object becomes empty",
			in:   `{"type":"m.room.member","content":"join"}`,
			v10:  `{"content":{},"type":"m.room.member"}`,
			v12:  `{"content":{},"type":"m.room.member"}`,
		},
		{
			name: "other event types lose all content",
			in:   `{"type":"m.room.message","content":{"body":"hi","msgtype":"m.text"}}`,
			v10:  `{"content":{},"type":"m.room.message"}`,
			v12:  `{"content":{},"type":"m.room.message"}`,
		},
		{
			name: "aliases lose all content",
			in:   `{"type":"m.room.aliases","content":{"aliases":["#a:x"]}}`,
			v10:  `{"content":{},"type":"m.room.aliases"}`,
			v12:  `{"content":{},"type":"m.room.aliases"}`,
		},
		{
			name: "member keeps membership and join_authorised_via_users_server",
			in:   `{"type":"m.room.member","content":{"membership":"join","join_authorised_via_users_server":"@u:x","displayname":"U","avatar_url":"mxc://x/y","reason":"r"}}`,
			v10:  `{"content":{"join_authorised_via_users_server":"@u:x","membership":"join"},"type":"m.room.member"}`,
			v12:  `{"content":{"join_authorised_via_users_server":"@u:x","membership":"join"},"type":"m.room.member"}`,
		},
		{
			name: "member third_party_invite keeps only signed, in v12 only",
			in:   `{"type":"m.room.member","content":{"membership":"invite","third_party_invite":{"display_name":"d","signed":{"mxid":"@u:x","token":"t","signatures":{}}}}}`,
			v10:  `{"content":{"membership":"invite"},"type":"m.room.member"}`,
			v12:  `{"content":{"membership":"invite","third_party_invite":{"signed":{"mxid":"@u:x","signatures":{},"token":"t"}}},"type":"m.room.member"}`,
		},
		{
			name: "member third_party_invite without signed is dropped",
			in:   `{"type":"m.room.member","content":{"membership":"invite","third_party_invite":{"display_name":"d"}}}`,
			v10:  `{"content":{"membership":"invite"},"type":"m.room.member"}`,
			v12:  `{"content":{"membership":"invite"},"type":"m.room.member"}`,
		},
		{
			name: "member third_party_invite that is not an object is dropped",
			in:   `{"type":"m.room.member","content":{"membership":"invite","third_party_invite":"x"}}`,
			v10:  `{"content":{"membership":"invite"},"type":"m.room.member"}`,
			v12:  `{"content":{"membership":"invite"},"type":"m.room.member"}`,
		},
		{
			name: "create keeps creator in v10, everything in v12",
			in:   `{"type":"m.room.create","state_key":"","content":{"creator":"@c:x","room_version":"10","m.federate":false,"predecessor":{"room_id":"!old:x"},"additional_creators":["@d:x"]}}`,
			v10:  `{"content":{"creator":"@c:x"},"state_key":"","type":"m.room.create"}`,
			v12:  `{"content":{"additional_creators":["@d:x"],"creator":"@c:x","m.federate":false,"predecessor":{"room_id":"!old:x"},"room_version":"10"},"state_key":"","type":"m.room.create"}`,
		},
		{
			name: "join_rules keeps join_rule and allow",
			in:   `{"type":"m.room.join_rules","state_key":"","content":{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!a:x"}],"other":1}}`,
			v10:  `{"content":{"allow":[{"room_id":"!a:x","type":"m.room_membership"}],"join_rule":"restricted"},"state_key":"","type":"m.room.join_rules"}`,
			v12:  `{"content":{"allow":[{"room_id":"!a:x","type":"m.room_membership"}],"join_rule":"restricted"},"state_key":"","type":"m.room.join_rules"}`,
		},
		{
			name: "power_levels keeps its levels, invite only in v12, never notifications",
			in:   `{"type":"m.room.power_levels","state_key":"","content":{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"redact":50,"state_default":50,"users":{"@c:x":100},"users_default":0,"notifications":{"room":50},"historical":100}}`,
			v10:  `{"content":{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@c:x":100},"users_default":0},"state_key":"","type":"m.room.power_levels"}`,
			v12:  `{"content":{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"redact":50,"state_default":50,"users":{"@c:x":100},"users_default":0},"state_key":"","type":"m.room.power_levels"}`,
		},
		{
			name: "history_visibility keeps history_visibility",
			in:   `{"type":"m.room.history_visibility","state_key":"","content":{"history_visibility":"shared","other":1}}`,
			v10:  `{"content":{"history_visibility":"shared"},"state_key":"","type":"m.room.history_visibility"}`,
			v12:  `{"content":{"history_visibility":"shared"},"state_key":"","type":"m.room.history_visibility"}`,
		},
		{
			name: "redaction keeps content.redacts in v12 only",
			in:   `{"type":"m.room.redaction","content":{"redacts":"$x","reason":"spam"}}`,
			v10:  `{"content":{},"type":"m.room.redaction"}`,
			v12:  `{"content":{"redacts":"$x"},"type":"m.room.redaction"}`,
		},
		{
			name: "state event of another type loses content",
			in:   `{"type":"m.room.topic","state_key":"","content":{"topic":"t"}}`,
			v10:  `{"content":{},"state_key":"","type":"m.room.topic"}`,
			v12:  `{"content":{},"state_key":"","type":"m.room.topic"}`,
		},
	}
	v10, v12 := mustVersion(t, "10"), mustVersion(t, "12")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, run := range []struct {
				v    Version
				want string
			}{{v10, c.v10}, {v12, c.v12}} {
				in := parseObject(t, []byte(c.in))
				before := mustCanonical(t, in)
				got := mustCanonical(t, Redact(run.v, in))
				if got != run.want {
					t.Errorf("v%s: got  %s\n      want %s", run.v.ID, got, run.want)
				}
				if mustCanonical(t, in) != before {
					t.Errorf("v%s: Redact modified its input", run.v.ID)
				}
				// Redaction is idempotent.
				if again := mustCanonical(t, Redact(run.v, Redact(run.v, in))); again != got {
					t.Errorf("v%s: redacting twice gives %s", run.v.ID, again)
				}
			}
		})
	}
}

// TestEvent_Redacted checks that an event's redacted copy keeps its ID
// and reference hash, loses its content hash match and keeps its
// signatures valid.
func TestEvent_Redacted(t *testing.T) {
	key := testKey("example.org")
	for _, v := range SupportedVersions() {
		t.Run("v"+v.ID, func(t *testing.T) {
			ev, err := ParseEvent(v, benchMessage(t, v))
			if err != nil {
				t.Fatal(err)
			}
			red := ev.Redacted()
			if red.EventID() != ev.EventID() || len(red.Content()) != 0 || red.ContentHashValid() {
				t.Fatalf("redacted: id %s content %v hash valid %v", red.EventID(), red.Content(), red.ContentHashValid())
			}
			if len(ev.Content()) == 0 || !ev.ContentHashValid() {
				t.Fatal("Redacted changed the original")
			}
			if eventIDOf(t, v, red.Object()) != ev.EventID() {
				t.Fatal("reference hash of the redacted copy differs")
			}
			if err := VerifyEventSignatures(red, keysFor(key)); err != nil {
				t.Fatalf("signature of redacted copy: %v", err)
			}
			reparsed, err := ParseEvent(v, red.JSON())
			if err != nil || reparsed.EventID() != ev.EventID() {
				t.Fatalf("re-parse of redacted copy: %v", err)
			}
		})
	}
}
