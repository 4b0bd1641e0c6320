package rooms

import (
	"encoding/json"
	"testing"
)

type eventVector struct {
	Event               json.RawMessage `json:"event"`
	ExpectedContentHash string          `json:"expected_content_hash"`
	ExpectedEventID     string          `json:"expected_event_id"`
	ExpectedRoomID      string          `json:"expected_room_id"`
}

func parseObject(tb testing.TB, raw []byte) map[string]any {
	tb.Helper()
	v, err := ParseJSON(raw)
	if err != nil {
		tb.Fatalf("parse: %v", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		tb.Fatalf("not an object: %s", raw)
	}
	return obj
}

func mustVersion(tb testing.TB, id string) Version {
	tb.Helper()
	v, err := LookupVersion(id)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func TestVectors_EventSigningV10Rules(t *testing.T) {
	vectors, keys := loadVectors(t, "event_signing")
	for _, v := range vectors {
		if v.RedactionRules != "room versions 1-10 (keeps top-level origin)" {
			continue // other rule sets are not room versions Ferry speaks
		}
		t.Run(v.ID, func(t *testing.T) {
			key := signingKeyFromVector(t, keys[v.Key])
			obj := parseObject(t, v.Input)
			if err := SignEvent(mustVersion(t, "10"), obj, key); err != nil {
				t.Fatal(err)
			}
			got, err := EncodeCanonical(obj)
			if err != nil {
				t.Fatal(err)
			}
			want, err := CanonicalJSON(v.ExpectedSigned)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestVectors_RoomIDV12(t *testing.T) {
	vectors, _ := loadVectors(t, "room_id_v12")
	for _, tv := range vectors {
		t.Run(tv.ID, func(t *testing.T) {
			var ev eventVector
			if err := json.Unmarshal(tv.Raw, &ev); err != nil {
				t.Fatal(err)
			}
			e, err := ParseEvent(mustVersion(t, "12"), ev.Event)
			if err != nil {
				t.Fatal(err)
			}
			if e.EventID() != ev.ExpectedEventID || e.RoomID() != ev.ExpectedRoomID {
				t.Fatalf("got %s %s, want %s %s", e.EventID(), e.RoomID(), ev.ExpectedEventID, ev.ExpectedRoomID)
			}
			if !e.ContentHashValid() {
				t.Fatal("content hash invalid")
			}
		})
	}
}
