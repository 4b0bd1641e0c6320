package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

// authToolInput is the tool's input for ev judged against auth.
func authToolInput(t *testing.T, v rooms.Version, ev *rooms.Event, auth []*rooms.Event) []byte {
	t.Helper()
	raws := make([]json.RawMessage, len(auth))
	for i, ae := range auth {
		raws[i] = ae.JSON()
	}
	in, err := json.Marshal(map[string]any{
		"room_version": v.ID,
		"event":        json.RawMessage(ev.JSON()),
		"auth_events":  raws,
	})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// runAuthTool runs `ferry inspect auth args...` and decodes its verdict.
func runAuthTool(t *testing.T, input []byte, args ...string) (code int, verdict map[string]any, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runMain(append([]string{"inspect", "auth"}, args...), bytes.NewReader(input), &out, &errOut)
	if code == 0 {
		if err := json.Unmarshal(out.Bytes(), &verdict); err != nil {
			t.Fatalf("output %q is not JSON: %v", out.String(), err)
		}
	}
	return code, verdict, errOut.String()
}

// authStateOf returns the events of r's current state that ev's
// selection picks, plus the create event (listed or not).
func authStateOf(r *roomstest.Room, ev *rooms.Event) []*rooms.Event {
	out := []*rooms.Event{r.Create()}
	for _, k := range rooms.AuthSelection(ev) {
		if k == rooms.CreateTuple {
			continue
		}
		if se := r.StateEvent(k.Type, k.StateKey); se != nil {
			out = append(out, se)
		}
	}
	return out
}

func TestInspectAuth_Allowed(t *testing.T) {
	for _, id := range []string{"10", "12"} {
		v, err := rooms.LookupVersion(id)
		if err != nil {
			t.Fatal(err)
		}
		t.Run("v"+id, func(t *testing.T) {
			r := roomstest.NewRoom(t, v, roomstest.Options{})
			ev := r.Build(roomstest.Member(roomstest.Bob, roomstest.Bob, "join"))
			for _, args := range [][]string{nil, {"-auth-events"}} {
				code, verdict, stderr := runAuthTool(t, authToolInput(t, v, ev, authStateOf(r, ev)), args...)
				if code != 0 {
					t.Fatalf("%v: exit %d: %s", args, code, stderr)
				}
				if len(verdict) != 1 || verdict["allowed"] != true {
					t.Errorf("%v: verdict = %v, want {allowed: true}", args, verdict)
				}
			}
		})
	}
}

func TestInspectAuth_Rejected(t *testing.T) {
	v, err := rooms.LookupVersion("12")
	if err != nil {
		t.Fatal(err)
	}
	r := roomstest.NewRoom(t, v, roomstest.Options{})
	r.Join(roomstest.Bob)
	r.Ban(roomstest.Alice, roomstest.Bob)
	ev := r.Build(roomstest.Member(roomstest.Bob, roomstest.Bob, "join"))
	code, verdict, stderr := runAuthTool(t, authToolInput(t, v, ev, authStateOf(r, ev)))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if verdict["allowed"] != false || verdict["reason"] != "membership: join: sender is banned" {
		t.Errorf("verdict = %v, want rejected because the sender is banned", verdict)
	}
}

// -auth-events applies the auth_events list rules: in version 12 the create
// event must not be listed.
func TestInspectAuth_AuthEventsRules(t *testing.T) {
	v, err := rooms.LookupVersion("12")
	if err != nil {
		t.Fatal(err)
	}
	r := roomstest.NewRoom(t, v, roomstest.Options{})
	s := roomstest.Message(roomstest.Alice, "hi")
	s.AuthEvents = []string{r.Create().EventID(), r.StateEvent("m.room.power_levels", "").EventID(), r.StateEvent("m.room.member", roomstest.Alice).EventID()}
	ev := r.Build(s)
	input := authToolInput(t, v, ev, r.AuthEventsOf(ev))
	if _, verdict, _ := runAuthTool(t, input); verdict["allowed"] != true {
		t.Errorf("state rules alone: verdict = %v, want allowed", verdict)
	}
	_, verdict, _ := runAuthTool(t, input, "-auth-events")
	if reason, _ := verdict["reason"].(string); verdict["allowed"] != false || !strings.HasPrefix(reason, "auth_events: the create event must not be listed") {
		t.Errorf("with -auth-events: verdict = %v, want rejected for listing the create event", verdict)
	}
}

func TestInspectAuth_UnusableInput(t *testing.T) {
	v, err := rooms.LookupVersion("10")
	if err != nil {
		t.Fatal(err)
	}
	r := roomstest.NewRoom(t, v, roomstest.Options{})
	ev := r.Build(roomstest.Message(roomstest.Alice, "hi"))
	twoPL := authToolInput(t, v, ev, []*rooms.Event{r.Create(), r.StateEvent("m.room.power_levels", ""), r.StateEvent("m.room.power_levels", "")})
	cases := map[string]struct {
		input string
		want  string
	}{
		"not JSON":        {"{", "not the expected JSON object"},
		"unknown field":   {`{"room_version":"10","event":{},"extra":1}`, "unknown field"},
		"no version":      {`{"event":{}}`, "room_version is missing"},
		"unknown version": {`{"room_version":"9","event":{}}`, "unsupported room version"},
		"no event":        {`{"room_version":"10"}`, "event is missing"},
		"bad event":       {`{"room_version":"10","event":{"type":"m.room.message"}}`, "event: event format"},
		"ambiguous state": {string(twoPL), "the auth state is ambiguous"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, _, stderr := runAuthTool(t, []byte(tc.input))
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 1 mentioning %q", code, stderr, tc.want)
			}
		})
	}
	if code, _, _ := runAuthTool(t, nil, "extra-arg"); code != 2 {
		t.Errorf("extra argument: exit %d, want 2", code)
	}
}

// A fixture may name its events with an event_id field.
func TestInspectAuth_FixtureEventIDs(t *testing.T) {
	input := `{"room_version": "10",
	"event": {"event_id": "$join", "type": "m.room.member", "state_key": "@bob:b.test", "sender": "@bob:b.test",
		"room_id": "!r:a.test", "content": {"membership": "join"}, "prev_events": ["$create"], "auth_events": ["$create"],
		"depth": 2, "origin_server_ts": 2, "hashes": {"sha256": "x"}, "signatures": {}},
	"auth_events": [{"event_id": "$create", "type": "m.room.create", "state_key": "", "sender": "@alice:a.test",
		"room_id": "!r:a.test", "content": {"creator": "@alice:a.test", "room_version": "10"}, "prev_events": [],
		"auth_events": [], "depth": 1, "origin_server_ts": 1, "hashes": {"sha256": "x"}, "signatures": {}}]}`
	code, verdict, stderr := runAuthTool(t, []byte(input))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if verdict["allowed"] != false || verdict["reason"] != "membership: join: the room has no join rule" {
		t.Errorf("verdict = %v", verdict)
	}
}
