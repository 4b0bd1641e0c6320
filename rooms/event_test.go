package rooms

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

const (
	testPrevID = "$4FbpZrgPQTwoLD9H5y7jcikucCypUOn78mXhQX7WliY"
	testAuthID = "$gbHO7IPUHybc7ULFnT7P0r3iWlZFHGmr6zBfEYCUyKw"
)

// testTemplate is a valid message template for version v.
func testTemplate(v Version, sender string) EventTemplate {
	roomID := "!room:example.org"
	if v.RoomIDs == RoomIDFromCreate {
		roomID = "!" + sampleHashID
	}
	return EventTemplate{
		Type: "m.room.message", Sender: sender, RoomID: roomID,
		Content:    map[string]any{"msgtype": "m.text", "body": "hello"},
		PrevEvents: []string{testPrevID}, AuthEvents: []string{testAuthID},
		Depth: 3, OriginServerTS: 1_700_000_000_000,
	}
}

func mustBuild(tb testing.TB, v Version, t EventTemplate, key SigningKey) *Event {
	tb.Helper()
	ev, err := BuildEvent(v, t, key)
	if err != nil {
		tb.Fatal(err)
	}
	return ev
}

// mutated returns the canonical JSON of a copy of ev's object changed by f.
func mutated(tb testing.TB, ev *Event, f func(obj map[string]any)) []byte {
	tb.Helper()
	obj := parseObject(tb, ev.JSON())
	f(obj)
	return []byte(mustCanonical(tb, obj))
}

func eventIDs(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = testPrevID
	}
	return out
}

func TestParseEvent_SizeLimits(t *testing.T) {
	v10 := mustVersion(t, "10")
	key := testKey("example.org")
	base := mustBuild(t, v10, testTemplate(v10, "@alice:example.org"), key)
	// Pad the body so the whole event is exactly n canonical bytes.
	sized := func(n int) func(obj map[string]any) {
		return func(obj map[string]any) {
			obj["content"].(map[string]any)["body"] = ""
			size := len(mustCanonical(t, obj))
			obj["content"].(map[string]any)["body"] = strings.Repeat("x", n-size)
		}
	}
	userOfLen := func(n int) string { return "@" + strings.Repeat("a", n-len("@:example.org")) + ":example.org" }
	roomOfLen := func(n int) string { return "!" + strings.Repeat("r", n-len("!:example.org")) + ":example.org" }
	cases := []struct {
		name string
		f    func(obj map[string]any)
		want string // "" for accepted
	}{
		{"event of 65536 bytes", sized(MaxPDUBytes), ""},
		{"event of 65537 bytes", sized(MaxPDUBytes + 1), "size: event is 65537 bytes in canonical JSON with signatures, more than 65536"},
		{"type of 255 bytes", func(o map[string]any) { o["type"] = strings.Repeat("t", 255) }, ""},
		{"type of 256 bytes", func(o map[string]any) { o["type"] = strings.Repeat("t", 256) }, "type: 256 bytes, more than 255"},
		{"state_key of 255 bytes", func(o map[string]any) { o["state_key"] = strings.Repeat("k", 255) }, ""},
		{"state_key of 256 bytes", func(o map[string]any) { o["state_key"] = strings.Repeat("k", 256) }, "state_key: 256 bytes, more than 255"},
		{"sender of 255 bytes", func(o map[string]any) { o["sender"] = userOfLen(255) }, ""},
		{"sender of 256 bytes", func(o map[string]any) { o["sender"] = userOfLen(256) }, "sender: " + fmt.Sprintf("%q", userOfLen(256)[:80]+"...")},
		{"room_id of 255 bytes", func(o map[string]any) { o["room_id"] = roomOfLen(255) }, ""},
		{"room_id of 256 bytes", func(o map[string]any) { o["room_id"] = roomOfLen(256) }, "longer than 255 bytes"},
		{"20 prev_events", func(o map[string]any) { o["prev_events"] = eventIDs(20) }, ""},
		{"21 prev_events", func(o map[string]any) { o["prev_events"] = eventIDs(21) }, "prev_events: 21 entries, more than 20"},
		{"10 auth_events", func(o map[string]any) { o["auth_events"] = eventIDs(10) }, ""},
		{"11 auth_events", func(o map[string]any) { o["auth_events"] = eventIDs(11) }, "auth_events: 11 entries, more than 10"},
		{"event ID of 256 bytes", func(o map[string]any) { o["prev_events"] = []any{"$" + strings.Repeat("a", 255)} }, "prev_events[0]:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := mutated(t, base, c.f)
			_, err := ParseEvent(v10, raw)
			if c.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			var ferr *FormatError
			if !errors.As(err, &ferr) || !errors.Is(err, ErrBadFormat) {
				t.Fatalf("error %v, want a FormatError", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
	t.Run("input far over the limit is refused unparsed", func(t *testing.T) {
		_, err := ParseEvent(v10, bytes.Repeat([]byte(" "), maxRawEventBytes+1))
		if !errors.Is(err, ErrBadFormat) || !strings.Contains(err.Error(), "65536") {
			t.Fatalf("error %v", err)
		}
	})
}

func TestParseEvent_FormatRules(t *testing.T) {
	v10, v12 := mustVersion(t, "10"), mustVersion(t, "12")
	key := testKey("example.org")
	base10 := mustBuild(t, v10, testTemplate(v10, "@alice:example.org"), key)
	base12 := mustBuild(t, v12, testTemplate(v12, "@alice:example.org"), key)
	cases := []struct {
		name string
		v    Version
		base *Event
		f    func(obj map[string]any)
		want []string
	}{
		{"every required field missing", v10, base10, func(o map[string]any) {
			for k := range o {
				delete(o, k)
			}
		}, []string{"type: missing", "sender: missing", "room_id: missing", "content: missing", "prev_events: missing", "auth_events: missing", "depth: missing", "origin_server_ts: missing", "hashes: missing", "signatures: missing"}},
		{"wrong types", v10, base10, func(o map[string]any) {
			o["type"], o["state_key"], o["content"], o["depth"], o["unsigned"] = int64(1), int64(2), "x", "1", "x"
		}, []string{"type: missing or not a string", "state_key: not a string", "content: missing or not an object", "depth: missing or not an integer", "unsigned: not an object"}},
		{"empty type is a string like any other", v10, base10, func(o map[string]any) { o["type"] = "" }, nil},
		{"negative depth", v10, base10, func(o map[string]any) { o["depth"] = int64(-1) }, []string{"depth: negative"}},
		{"historical sender accepted", v10, base10, func(o map[string]any) { o["sender"] = "@Ä lice:example.org" }, nil},
		{"sender without server", v10, base10, func(o map[string]any) { o["sender"] = "@alice" }, []string{"sender:", "no ':'"}},
		{"sender with bad server", v10, base10, func(o map[string]any) { o["sender"] = "@alice:exa_mple.org" }, []string{"sender:", "hostname contains"}},
		{"v10 hash room ID", v10, base10, func(o map[string]any) { o["room_id"] = "!" + sampleHashID }, []string{"room_id:", "no ':'"}},
		{"v12 opaque room ID", v12, base12, func(o map[string]any) { o["room_id"] = "!room:example.org" }, []string{"room_id:", "has a server part"}},
		{"v12 short room ID", v12, base12, func(o map[string]any) { o["room_id"] = "!abc" }, []string{"room_id:", "43 characters"}},
		{"v12 create with room ID", v12, base12, func(o map[string]any) { o["type"], o["state_key"] = "m.room.create", "" }, []string{"room_id: a version 12 create event has none"}},
		{"create without state key", v10, base10, func(o map[string]any) { o["type"] = "m.room.create" }, []string{"state_key: m.room.create must be a state event"}},
		{"legacy event ID", v10, base10, func(o map[string]any) { o["auth_events"] = []any{"$abc:example.org"} }, []string{"auth_events[0]:"}},
		{"event ID not a string", v10, base10, func(o map[string]any) { o["prev_events"] = []any{int64(1)} }, []string{"prev_events[0]: not a string"}},
		{"hash not base64", v10, base10, func(o map[string]any) { o["hashes"] = map[string]any{"sha256": "!!"} }, []string{"hashes.sha256: not an unpadded base64 SHA-256 digest"}},
		{"hash missing", v10, base10, func(o map[string]any) { o["hashes"] = map[string]any{} }, []string{"hashes.sha256: missing"}},
		{"signatures malformed", v10, base10, func(o map[string]any) {
			o["signatures"] = map[string]any{"a.org": "x", "b.org": map[string]any{"ed25519:1": int64(1)}}
		}, []string{"signatures.a.org: not an object", "signatures.b.org.ed25519:1: not a string"}},
		{"v10 top-level redacts not an event ID", v10, base10, func(o map[string]any) { o["redacts"] = "nope" }, []string{"redacts:"}},
		{"v12 ignores top-level redacts", v12, base12, func(o map[string]any) { o["redacts"] = "nope" }, nil},
		{"unknown keys kept", v10, base10, func(o map[string]any) { o["com.example.extra"] = []any{int64(1)} }, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := mutated(t, c.base, c.f)
			ev, err := ParseEvent(c.v, raw)
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if !bytes.Equal(ev.JSON(), raw) {
					t.Fatal("event JSON differs from the canonical input")
				}
				return
			}
			if !errors.Is(err, ErrBadFormat) {
				t.Fatalf("error %v, want a format error", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestParseEvent_StrictJSON(t *testing.T) {
	v10 := mustVersion(t, "10")
	good := string(mustBuild(t, v10, testTemplate(v10, "@alice:example.org"), testKey("example.org")).JSON())
	cases := []struct{ name, from, to, reason string }{
		{"float", `"depth":3`, `"depth":3.0`, "only integers"},
		{"exponent", `"depth":3`, `"depth":3e0`, "only integers"},
		{"negative zero", `"depth":3`, `"depth":-0`, "negative zero"},
		{"2^53", `"depth":3`, `"depth":9007199254740992`, "out of range"},
		{"duplicate key", `"depth":3`, `"depth":3,"depth":3`, "duplicate key"},
		{"invalid utf-8", `"hello"`, "\"hel\xfflo\"", "invalid UTF-8"},
		{"lone surrogate", `"hello"`, `"hel\ud800lo"`, "lone high surrogate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := strings.Replace(good, c.from, c.to, 1)
			if raw == good {
				t.Fatalf("%q not in event", c.from)
			}
			_, err := ParseEvent(v10, []byte(raw))
			var jerr *JSONError
			if !errors.As(err, &jerr) || !strings.Contains(jerr.Reason, c.reason) {
				t.Fatalf("error %v, want %q", err, c.reason)
			}
		})
	}
}

func TestParseEvent_KeepsBytesAndUnknownKeys(t *testing.T) {
	v10 := mustVersion(t, "10")
	ev := mustBuild(t, v10, testTemplate(v10, "@alice:example.org"), testKey("example.org"))
	obj := parseObject(t, ev.JSON())
	obj["com.example.unknown"] = map[string]any{"x": int64(1)}
	canonical := mustCanonical(t, obj)
	spaced := " " + strings.ReplaceAll(canonical, ",", " , ") + "\n"
	parsed, err := ParseEvent(v10, []byte(spaced))
	if err != nil {
		t.Fatal(err)
	}
	if string(parsed.ReceivedJSON()) != spaced || string(parsed.JSON()) != canonical {
		t.Fatalf("received %q canonical %q", parsed.ReceivedJSON(), parsed.JSON())
	}
	if _, ok := parsed.Object()["com.example.unknown"]; !ok || !strings.Contains(string(parsed.JSON()), "com.example.unknown") {
		t.Fatal("unknown key lost")
	}
	// The unknown key is covered by the content hash but not the ID.
	if parsed.ContentHashValid() || parsed.EventID() != ev.EventID() {
		t.Fatalf("hash valid %v, id %s vs %s", parsed.ContentHashValid(), parsed.EventID(), ev.EventID())
	}
	same, err := ParseEvent(v10, ev.JSON())
	if err != nil || !bytes.Equal(same.ReceivedJSON(), ev.JSON()) {
		t.Fatalf("canonical input: %v", err)
	}
	// Accessors.
	if same.Type() != "m.room.message" || same.Sender() != "@alice:example.org" || same.SenderServer() != "example.org" ||
		same.Depth() != 3 || same.OriginServerTS() != 1_700_000_000_000 || same.IsState() ||
		!reflect.DeepEqual(same.PrevEvents(), []string{testPrevID}) || !reflect.DeepEqual(same.AuthEvents(), []string{testAuthID}) ||
		same.Content()["body"] != "hello" || same.RoomID() != "!room:example.org" || same.Version().ID != "10" {
		t.Fatalf("accessors: %+v", same)
	}
}

// validityKeys is a KeyLookup whose keys expire: a key answers only for
// events whose origin_server_ts is at most its validUntil.
type validityKeys map[string]struct {
	pub        ed25519.PublicKey
	validUntil int64
}

func (k validityKeys) VerifyKey(server, keyID string, ts int64) (ed25519.PublicKey, error) {
	e, ok := k[server+" "+keyID]
	if !ok {
		return nil, errors.New("unknown key")
	}
	if ts > e.validUntil {
		return nil, fmt.Errorf("key expired at %d, before the event's %d", e.validUntil, ts)
	}
	return e.pub, nil
}

func resign(tb testing.TB, v Version, ev *Event, keys ...SigningKey) *Event {
	tb.Helper()
	obj := parseObject(tb, ev.JSON())
	for _, k := range keys {
		if err := SignEvent(v, obj, k); err != nil {
			tb.Fatal(err)
		}
	}
	out, err := NewEventFromObject(v, obj)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestCheckEvent(t *testing.T) {
	key := testKey("example.org")
	key2 := SigningKey{ServerName: "example.org", KeyID: "ed25519:t2", Private: testKey("second").Private}
	other := testKey("other.example")
	for _, v := range SupportedVersions() {
		t.Run("v"+v.ID, func(t *testing.T) {
			ev := mustBuild(t, v, testTemplate(v, "@alice:example.org"), key)
			t.Run("valid", func(t *testing.T) {
				got, err := CheckEvent(ev, keysFor(key))
				if err != nil || got != ev {
					t.Fatalf("got %p %v, want the event itself", got, err)
				}
			})
			t.Run("content changed: redacted copy", func(t *testing.T) {
				changed, err := ParseEvent(v, mutated(t, ev, func(o map[string]any) { o["content"].(map[string]any)["body"] = "HELLO" }))
				if err != nil {
					t.Fatal(err)
				}
				got, err := CheckEvent(changed, keysFor(key))
				if err != nil {
					t.Fatalf("signature should still hold: %v", err)
				}
				if got == changed || len(got.Content()) != 0 || got.EventID() != ev.EventID() {
					t.Fatalf("want the redacted copy, got content %v", got.Content())
				}
			})
			t.Run("type changed: bad signature", func(t *testing.T) {
				changed, err := ParseEvent(v, mutated(t, ev, func(o map[string]any) { o["type"] = "m.room.messagf" }))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := CheckEvent(changed, keysFor(key)); !errors.Is(err, ErrBadSignature) {
					t.Fatalf("error %v", err)
				}
			})
			t.Run("no signature from the sender's server", func(t *testing.T) {
				foreign := mustBuild(t, v, testTemplate(v, "@alice:example.org"), other)
				if _, err := CheckEvent(foreign, keysFor(key, other)); !errors.Is(err, ErrNoSignature) {
					t.Fatalf("error %v", err)
				}
			})
			t.Run("unknown key is skipped, none left", func(t *testing.T) {
				if _, err := CheckEvent(ev, keysFor(other)); !errors.Is(err, ErrNoSignature) || !strings.Contains(err.Error(), "known key") {
					t.Fatalf("error %v", err)
				}
			})
			t.Run("key validity against origin_server_ts", func(t *testing.T) {
				ts := ev.OriginServerTS()
				valid := validityKeys{"example.org ed25519:t1": {key.PublicKey(), ts}}
				if _, err := CheckEvent(ev, valid); err != nil {
					t.Fatalf("key valid until the event's ts: %v", err)
				}
				expired := validityKeys{"example.org ed25519:t1": {key.PublicKey(), ts - 1}}
				if _, err := CheckEvent(ev, expired); !errors.Is(err, ErrNoSignature) || !strings.Contains(err.Error(), "expired") {
					t.Fatalf("expired key: %v", err)
				}
			})
			t.Run("every known key must verify", func(t *testing.T) {
				both := resign(t, v, ev, key2)
				if _, err := CheckEvent(both, keysFor(key, key2)); err != nil {
					t.Fatalf("two good signatures: %v", err)
				}
				if _, err := CheckEvent(both, keysFor(key2)); err != nil {
					t.Fatalf("one known good signature, one unknown: %v", err)
				}
				// A known key whose signature fails spoils the event.
				wrong := keysFor(key)
				wrong["example.org"]["ed25519:t2"] = other.PublicKey()
				if _, err := CheckEvent(both, wrong); !errors.Is(err, ErrBadSignature) {
					t.Fatalf("bad signature under a known key: %v", err)
				}
			})
			t.Run("other servers and algorithms are ignored", func(t *testing.T) {
				obj := parseObject(t, ev.JSON())
				sigs := obj["signatures"].(map[string]any)
				sigs["policy.example"] = map[string]any{"ed25519:p": "AAAA"}
				sigs["example.org"].(map[string]any)["curve448:x"] = "AAAA"
				extra, err := NewEventFromObject(v, obj)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := CheckEvent(extra, keysFor(key)); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

func TestCheckEvent_JoinAuthorisedViaUsersServer(t *testing.T) {
	alice := testKey("example.org")
	resident := testKey("resident.example")
	keys := keysFor(alice, resident)
	for _, v := range SupportedVersions() {
		member := func(membership, via string) EventTemplate {
			t := testTemplate(v, "@alice:example.org")
			t.Type, t.StateKey = "m.room.member", StringPtr("@alice:example.org")
			t.Content = map[string]any{"membership": membership, "join_authorised_via_users_server": via}
			return t
		}
		t.Run("v"+v.ID, func(t *testing.T) {
			join := mustBuild(t, v, member("join", "@bob:resident.example"), alice)
			if got := join.RequiredSigners(); !reflect.DeepEqual(got, []string{"example.org", "resident.example"}) {
				t.Fatalf("required signers %v", got)
			}
			if _, err := CheckEvent(join, keys); !errors.Is(err, ErrNoSignature) || !strings.Contains(err.Error(), "resident.example") {
				t.Fatalf("missing resident signature: %v", err)
			}
			if _, err := CheckEvent(resign(t, v, join, resident), keys); err != nil {
				t.Fatalf("both signed: %v", err)
			}
			// Whatever the membership, the key demands the signature.
			leave := mustBuild(t, v, member("leave", "@bob:resident.example"), alice)
			if _, err := CheckEvent(leave, keys); !errors.Is(err, ErrNoSignature) {
				t.Fatalf("leave with the key: %v", err)
			}
			same := mustBuild(t, v, member("join", "@carol:example.org"), alice)
			if got := same.RequiredSigners(); !reflect.DeepEqual(got, []string{"example.org"}) {
				t.Fatalf("same-server signers %v", got)
			}
			if _, err := CheckEvent(same, keys); err != nil {
				t.Fatal(err)
			}
			bad := mustBuild(t, v, member("join", "not a user"), alice)
			if _, err := CheckEvent(bad, keys); !errors.Is(err, ErrSignerMissing) {
				t.Fatalf("malformed authorising user: %v", err)
			}
			plain := mustBuild(t, v, testTemplate(v, "@alice:example.org"), alice)
			if got := plain.RequiredSigners(); !reflect.DeepEqual(got, []string{"example.org"}) {
				t.Fatalf("message signers %v", got)
			}
		})
	}
}

func TestBuildEvent(t *testing.T) {
	key := testKey("example.org")
	for _, v := range SupportedVersions() {
		t.Run("v"+v.ID, func(t *testing.T) {
			tmpl := testTemplate(v, "@alice:example.org")
			tmpl.Content = map[string]any{"n": 7, "list": []string{"a"}, "m": map[string]string{"k": "v"}}
			ev := mustBuild(t, v, tmpl, key)
			if ev.Content()["n"] != int64(7) || !reflect.DeepEqual(ev.Content()["list"], []any{"a"}) {
				t.Fatalf("content not normalised: %#v", ev.Content())
			}
			if _, ok := ev.Object()["origin"]; ok {
				t.Fatal("builder wrote the legacy origin key")
			}
			// What the builder makes, a receiver accepts unchanged.
			back, err := ParseEvent(v, ev.JSON())
			if err != nil {
				t.Fatal(err)
			}
			if back.EventID() != ev.EventID() || !bytes.Equal(back.JSON(), ev.JSON()) {
				t.Fatal("re-parse differs")
			}
			if got, err := CheckEvent(back, keysFor(key)); err != nil || got != back {
				t.Fatalf("check: %v", err)
			}

			empty := testTemplate(v, "@alice:example.org")
			empty.Content, empty.PrevEvents, empty.AuthEvents = nil, nil, nil
			e := mustBuild(t, v, empty, key)
			if !strings.Contains(string(e.JSON()), `"auth_events":[],"content":{}`) || !strings.Contains(string(e.JSON()), `"prev_events":[]`) {
				t.Fatalf("empty lists and content not written: %s", e.JSON())
			}

			red := testTemplate(v, "@alice:example.org")
			red.Type, red.Redacts, red.Content = "m.room.redaction", testPrevID, map[string]any{"reason": "spam"}
			r := mustBuild(t, v, red, key)
			_, top := r.Object()["redacts"]
			_, inContent := r.Content()["redacts"]
			if r.Redacts() != testPrevID || top == v.RedactsInContent || inContent != v.RedactsInContent {
				t.Fatalf("redacts placed top %v content %v for version %s", top, inContent, v.ID)
			}

			bad := testTemplate(v, "alice")
			if _, err := BuildEvent(v, bad, key); !errors.Is(err, ErrBadFormat) {
				t.Fatalf("bad sender: %v", err)
			}
			float := testTemplate(v, "@alice:example.org")
			float.Content = map[string]any{"x": 1.5}
			if _, err := BuildEvent(v, float, key); err == nil {
				t.Fatal("float content built")
			}
		})
	}
}

func TestBuildEvent_Create(t *testing.T) {
	key := testKey("example.org")
	v10, v12 := mustVersion(t, "10"), mustVersion(t, "12")
	create := func(v Version, roomID string) EventTemplate {
		content := map[string]any{"room_version": v.ID}
		if v.CreateHasCreator {
			content["creator"] = "@alice:example.org"
		}
		return EventTemplate{Type: "m.room.create", StateKey: StringPtr(""), Sender: "@alice:example.org", RoomID: roomID, Content: content, Depth: 1, OriginServerTS: 1}
	}
	c12 := mustBuild(t, v12, create(v12, ""), key)
	if _, ok := c12.Object()["room_id"]; ok || c12.RoomID() != "!"+c12.EventID()[1:] {
		t.Fatalf("v12 create: room %s id %s", c12.RoomID(), c12.EventID())
	}
	if _, err := ParseRoomIDFor(v12, c12.RoomID()); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildEvent(v12, create(v12, "!x:example.org"), key); !errors.Is(err, ErrBadFormat) {
		t.Fatalf("v12 create with room ID: %v", err)
	}
	c10 := mustBuild(t, v10, create(v10, "!x:example.org"), key)
	if c10.RoomID() != "!x:example.org" {
		t.Fatalf("v10 room %s", c10.RoomID())
	}
	if _, err := BuildEvent(v10, create(v10, ""), key); !errors.Is(err, ErrBadFormat) {
		t.Fatalf("v10 create without room ID: %v", err)
	}
}

func TestParseEventTrusted(t *testing.T) {
	v10 := mustVersion(t, "10")
	ev := mustBuild(t, v10, testTemplate(v10, "@alice:example.org"), testKey("example.org"))
	tr, err := ParseEventTrusted(v10, ev.JSON(), "$readable")
	if err != nil {
		t.Fatal(err)
	}
	if tr.EventID() != "$readable" || !tr.ContentHashValid() {
		t.Fatalf("id %s hash %v", tr.EventID(), tr.ContentHashValid())
	}
	// Signature checks work without the cached reference input.
	if err := VerifyEventSignatures(tr, keysFor(testKey("example.org"))); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseEventTrusted(v10, []byte(`[1]`), "$x"); !errors.Is(err, ErrBadFormat) {
		t.Fatalf("array: %v", err)
	}
}

func TestNextDepth(t *testing.T) {
	cases := []struct {
		in   []int64
		want int64
	}{
		{nil, 1},
		{[]int64{0}, 1},
		{[]int64{3, 7, 5}, 8},
		{[]int64{MaxSafeInteger - 1}, MaxSafeInteger},
		{[]int64{MaxSafeInteger}, MaxSafeInteger},
		{[]int64{-4}, 1},
	}
	for _, c := range cases {
		if got := NextDepth(c.in...); got != c.want {
			t.Errorf("NextDepth(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}

// TestEvent_ConcurrentUse runs the read-only methods from several
// goroutines; `go test -race` turns any hidden mutation into a failure.
func TestEvent_ConcurrentUse(t *testing.T) {
	v12 := mustVersion(t, "12")
	key := testKey("example.org")
	ev := mustBuild(t, v12, testTemplate(v12, "@alice:example.org"), key)
	trusted, err := ParseEventTrusted(v12, ev.JSON(), ev.EventID())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() {
			for _, e := range []*Event{ev, trusted} {
				if _, err := CheckEvent(e, keysFor(key)); err != nil {
					done <- err
					return
				}
				if red := e.Redacted(); red.EventID() != ev.EventID() {
					done <- errors.New("redacted copy changed ID")
					return
				}
			}
			done <- nil
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
