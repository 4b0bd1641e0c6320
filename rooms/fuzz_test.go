package rooms

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"os"
	"testing"
)

// Fuzz tests: in a plain `go test` they run their seeds; with
// `go test ./rooms -run '^$' -fuzz FuzzX -fuzztime 30s` they search.

func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `null`, `true`, `0`, `-1`, `"x"`,
		`{"b":2,"a":1,"c":{"z":[1,2,{"y":null}]}}`,
		`{"a":"\u00e9\ud83d\ude00\n\t\u0001\/"}`,
		`{"日":1,"本":2,"é":3}`,
		`{"a":9007199254740991,"b":-9007199254740991}`,
		`{"a":1.5}`, `{"a":1e3}`, `{"a":-0}`, `{"a":1,"a":2}`, "{\"a\":\"\xff\"}", `{"a":"\ud800"}`,
		` [ 1 , [ ] , { } ] `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Neither parser may panic; the lenient one accepts a superset.
		lenient, lerr := ParseJSONLenient(data)
		tree, err := ParseJSON(data)
		if err != nil {
			if lerr == nil {
				if _, err := EncodeCanonical(lenient); err != nil {
					t.Fatalf("lenient tree does not encode: %v", err)
				}
			}
			return
		}
		if lerr != nil {
			t.Fatalf("lenient parser rejects what the strict one accepts: %v", lerr)
		}
		enc1, err := EncodeCanonical(tree)
		if err != nil {
			t.Fatalf("encode parsed tree: %v", err)
		}
		tree2, err := ParseJSON(enc1)
		if err != nil {
			t.Fatalf("re-parse canonical output %q: %v", enc1, err)
		}
		enc2, err := EncodeCanonical(tree2)
		if err != nil {
			t.Fatalf("encode re-parsed tree: %v", err)
		}
		if !bytes.Equal(enc1, enc2) {
			t.Fatalf("not stable:\n%q\n%q", enc1, enc2)
		}
		if obj, ok := tree.(map[string]any); ok {
			// The member-wise encoding used for events agrees with the
			// plain one.
			enc3, _, err := encodeMembers(nil, obj)
			if err != nil || !bytes.Equal(enc3, enc1) {
				t.Fatalf("encodeMembers %q, %v; want %q", enc3, err, enc1)
			}
		}
	})
}

func fuzzEventSeeds(f *testing.F) {
	data, err := loadVectorEvents()
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range data {
		f.Add(e)
	}
	key := testKey("example.org")
	for _, v := range SupportedVersions() {
		f.Add(benchMessage(f, v))
		ev, err := BuildEvent(v, EventTemplate{
			Type: "m.room.member", StateKey: StringPtr("@a:example.org"), Sender: "@a:example.org",
			RoomID:  map[bool]string{true: "!" + sampleHashID, false: "!r:example.org"}[v.RoomIDs == RoomIDFromCreate],
			Content: map[string]any{"membership": "join", "join_authorised_via_users_server": "@b:other.example", "third_party_invite": map[string]any{"signed": map[string]any{"mxid": "@a:example.org"}}},
			Depth:   2, OriginServerTS: 9,
		}, key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ev.JSON())
	}
	f.Add([]byte(`{"type":"m.room.create","content":{},"state_key":""}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
}

// loadVectorEvents returns the event objects of the shared vectors.
func loadVectorEvents() ([][]byte, error) {
	var out [][]byte
	for _, kind := range []string{"event_id", "content_hash", "room_id_v12"} {
		vs, err := loadVectorsQuiet(kind)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			if obj, ok := v["event"]; ok {
				out = append(out, obj)
			}
		}
	}
	return out, nil
}

func FuzzParseEvent(f *testing.F) {
	fuzzEventSeeds(f)
	versions := SupportedVersions()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range versions {
			// Whatever the input, the lower-level functions must not
			// panic on any object.
			if tree, err := ParseJSON(data); err == nil {
				if obj, ok := tree.(map[string]any); ok {
					CheckEventFormat(v, obj, len(data))
					Redact(v, obj)
					_, _ = ContentHash(obj)
					_, _ = ReferenceHash(v, obj)
				}
			}
			ev, err := ParseEvent(v, data)
			if err != nil {
				continue
			}
			// The ID from the one-pass encoding equals the spec's
			// definition computed the long way.
			ref, err := ReferenceHash(v, ev.Object())
			if err != nil || ev.EventID() != "$"+EncodeBase64URL(ref[:]) {
				t.Fatalf("v%s: event ID %s, reference hash %x (%v)", v.ID, ev.EventID(), ref, err)
			}
			want, err := ContentHash(ev.Object())
			if err != nil {
				t.Fatal(err)
			}
			hashes, _ := ev.Object()["hashes"].(map[string]any)
			claimed, _ := hashes["sha256"].(string)
			dec, _ := DecodeBase64(claimed)
			if ev.ContentHashValid() != (len(dec) == sha256.Size && bytes.Equal(dec, want[:])) {
				t.Fatalf("v%s: ContentHashValid %v disagrees with ContentHash", v.ID, ev.ContentHashValid())
			}
			again, err := ParseEvent(v, ev.JSON())
			if err != nil {
				t.Fatalf("v%s: canonical form rejected: %v", v.ID, err)
			}
			if again.EventID() != ev.EventID() || !bytes.Equal(again.JSON(), ev.JSON()) || again.RoomID() != ev.RoomID() {
				t.Fatalf("v%s: parse -> encode -> parse not stable", v.ID)
			}
			red := ev.Redacted()
			if red.EventID() != ev.EventID() {
				t.Fatalf("v%s: redacted copy has another ID", v.ID)
			}
			_, _ = CheckEvent(ev, staticKeys{})
			_ = ev.RequiredSigners()
			_ = ev.Redacts()
			_ = ev.Membership()
		}
	})
}

func FuzzParseIDs(f *testing.F) {
	for _, s := range []string{
		"matrix.org", "matrix.org:8448", "1.2.3.4", "[::1]:80", "[1234:5678::abcd]",
		"@alice:example.org", "@:example.org", "@a\x00:x", "@Ä:x:1",
		"!abc:example.org", "!" + sampleHashID, "$" + sampleHashID, "#room:example.org",
		"", "@", ":", "[", "[]:", "1.2.3.256", "a:99999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		check := func(kind string, parse func(string) (string, error)) {
			got, err := parse(s)
			if err != nil {
				return
			}
			if got != s {
				t.Fatalf("%s %q parsed to %q", kind, s, got)
			}
			if again, err := parse(got); err != nil || again != got {
				t.Fatalf("%s %q not stable: %q %v", kind, s, again, err)
			}
		}
		check("server name", func(s string) (string, error) {
			v, err := ParseServerName(s)
			if err == nil {
				_ = v.Host()
				_, _ = v.Port()
			}
			return v.String(), err
		})
		check("user ID", func(s string) (string, error) {
			v, err := ParseUserID(s)
			if err == nil {
				if _, err := ParseServerName(string(v.Server())); err != nil {
					t.Fatalf("user %q has server %q: %v", s, v.Server(), err)
				}
				_ = v.Localpart()
				_ = v.IsCompliant()
			}
			return v.String(), err
		})
		check("strict user ID", func(s string) (string, error) {
			v, err := ParseUserIDStrict(s)
			if err == nil {
				if _, err := ParseUserID(s); err != nil {
					t.Fatalf("strict accepts %q, historical rejects it: %v", s, err)
				}
			}
			return v.String(), err
		})
		check("room ID", func(s string) (string, error) {
			v, err := ParseRoomID(s)
			if err == nil {
				_, _ = v.Server()
				if id, ok := v.CreateEventID(); ok {
					if _, err := ParseEventID(string(id)); err != nil {
						t.Fatalf("room %q names create event %q: %v", s, id, err)
					}
				}
			}
			return v.String(), err
		})
		for _, ver := range SupportedVersions() {
			check("room ID v"+ver.ID, func(s string) (string, error) {
				v, err := ParseRoomIDFor(ver, s)
				if err == nil {
					if _, err := ParseRoomID(s); err != nil {
						t.Fatalf("version %s accepts %q, ParseRoomID rejects it", ver.ID, s)
					}
				}
				return v.String(), err
			})
		}
		check("event ID", func(s string) (string, error) {
			v, err := ParseEventID(s)
			return v.String(), err
		})
		check("room alias", func(s string) (string, error) {
			v, err := ParseRoomAlias(s)
			if err == nil {
				_ = v.Localpart()
				_ = v.Server()
			}
			return v.String(), err
		})
	})
}

// loadVectorsQuiet returns the raw fields of the vectors of kind, or
// nothing when the file cannot be read (the vector tests report that).
func loadVectorsQuiet(kind string) ([]map[string]json.RawMessage, error) {
	data, err := os.ReadFile("../testdata/testvectors.json")
	if err != nil {
		return nil, err
	}
	var f struct {
		Vectors []map[string]json.RawMessage `json:"vectors"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	var out []map[string]json.RawMessage
	for _, v := range f.Vectors {
		var k string
		if err := json.Unmarshal(v["kind"], &k); err == nil && k == kind {
			out = append(out, v)
		}
	}
	return out, nil
}
