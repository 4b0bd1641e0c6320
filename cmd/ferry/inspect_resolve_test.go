package main

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
)

// stateResVectors returns the state_resolution vectors of the shared file.
func stateResVectors(t *testing.T) []map[string]json.RawMessage {
	t.Helper()
	data, err := os.ReadFile("../../testdata/testvectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []map[string]json.RawMessage `json:"vectors"`
		Derived []map[string]json.RawMessage `json:"derived_vectors"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	var out []map[string]json.RawMessage
	for _, v := range append(file.Vectors, file.Derived...) {
		if string(v["kind"]) == `"state_resolution"` {
			out = append(out, v)
		}
	}
	return out
}

func TestInspectResolve_Vectors(t *testing.T) {
	vectors := stateResVectors(t)
	if len(vectors) != 13 {
		t.Fatalf("%d state_resolution vectors, want 13", len(vectors))
	}
	for _, v := range vectors {
		var id string
		if err := json.Unmarshal(v["id"], &id); err != nil {
			t.Fatal(err)
		}
		t.Run(id, func(t *testing.T) {
			input, err := json.Marshal(map[string]json.RawMessage{
				"room_version": v["room_version"],
				"pdus":         v["pdus"],
				"state_sets":   v["state_sets"],
			})
			if err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if code := runMain([]string{"inspect", "resolve"}, bytes.NewReader(input), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			var got struct {
				State map[string]string `json:"state"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
				t.Fatalf("output %q: %v", stdout.String(), err)
			}
			var want map[string]string
			if err := json.Unmarshal(v["expected_resolved_state"], &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.State, want) {
				t.Fatalf("resolved state\n got %v\nwant %v", got.State, want)
			}
		})
	}
}

func TestInspectResolve_OutputShape(t *testing.T) {
	input := `{"room_version": "10", "pdus": [
		{"event_id": "$c", "room_id": "!r:x", "sender": "@a:x", "type": "m.room.create", "state_key": "",
		 "content": {"creator": "@a:x", "room_version": "10"}, "origin_server_ts": 0, "prev_events": [], "auth_events": [], "depth": 1},
		{"event_id": "$j", "room_id": "!r:x", "sender": "@a:x", "type": "m.room.member", "state_key": "@a:x",
		 "content": {"membership": "join"}, "origin_server_ts": 1, "prev_events": ["$c"], "auth_events": ["$c"], "depth": 2}
	], "state_sets": [["$c", "$j"], ["$c"]]}`
	var stdout, stderr bytes.Buffer
	if code := runMain([]string{"inspect", "resolve"}, strings.NewReader(input), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	want := "{\n  \"state\": {\n    \"m.room.create|\": \"$c\",\n    \"m.room.member|@a:x\": \"$j\"\n  }\n}\n"
	if stdout.String() != want {
		t.Fatalf("output\n%s\nwant\n%s", stdout.String(), want)
	}
}

func TestInspectResolve_BadInput(t *testing.T) {
	create := `{"event_id": "$c", "room_id": "!r:x", "sender": "@a:x", "type": "m.room.create", "state_key": "", "content": {"creator": "@a:x"}, "origin_server_ts": 0, "prev_events": [], "auth_events": []}`
	msg := `{"event_id": "$m", "room_id": "!r:x", "sender": "@a:x", "type": "m.room.message", "content": {}, "origin_server_ts": 1, "prev_events": [], "auth_events": ["$c"]}`
	create2 := strings.Replace(create, `"$c"`, `"$c2"`, 1)
	cases := []struct {
		name, input, wantErr string
	}{
		{"NotJSON", `{"room_version":`, "not the expected JSON object"},
		{"UnknownField", `{"room_version": "10", "pdus": [], "state_sets": [[]], "extra": 1}`, "unknown field"},
		{"NoVersion", `{"pdus": [], "state_sets": [[]]}`, "room_version is missing"},
		{"UnknownVersion", `{"room_version": "9", "pdus": [], "state_sets": [[]]}`, "unsupported room version"},
		{"NoStateSets", `{"room_version": "10", "pdus": []}`, "state_sets is missing"},
		{"UnknownEvent", `{"room_version": "10", "pdus": [` + create + `], "state_sets": [["$nope"]]}`, "$nope is not among the pdus"},
		{"NotState", `{"room_version": "10", "pdus": [` + create + `,` + msg + `], "state_sets": [["$m"]]}`, "$m is not a state event"},
		{"DuplicateKey", `{"room_version": "10", "pdus": [` + create + `,` + create2 + `], "state_sets": [["$c", "$c2"]]}`, "both hold"},
		{"DuplicatePDU", `{"room_version": "10", "pdus": [` + create + `,` + create + `], "state_sets": [["$c"]]}`, "appears twice"},
		{"BadPDU", `{"room_version": "10", "pdus": [{"type": "m.room.create"}], "state_sets": [[]]}`, "pdus[0]"},
		{"MissingAuthEvent", `{"room_version": "10", "pdus": [` + create + `,` + strings.Replace(create2, `"auth_events": []`, `"auth_events": ["$gone"]`, 1) + `], "state_sets": [["$c"], ["$c2"]]}`, "event not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runMain([]string{"inspect", "resolve"}, strings.NewReader(c.input), &stdout, &stderr)
			if code != 1 {
				t.Fatalf("exit %d, want 1 (stderr %q)", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.wantErr) {
				t.Fatalf("stderr %q does not mention %q", stderr.String(), c.wantErr)
			}
			if stdout.Len() != 0 {
				t.Fatalf("stdout %q, want nothing", stdout.String())
			}
		})
	}
	t.Run("ExtraArgument", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		if code := runMain([]string{"inspect", "resolve", "file.json"}, strings.NewReader("{}"), &stdout, &stderr); code != 2 {
			t.Fatalf("exit %d, want 2", code)
		}
	})
}

// FuzzInspectResolve feeds arbitrary input to `ferry inspect resolve`: it
// either prints a resolved state or exits 1 with a message, and never
// panics. The seeds are the state_resolution vectors and a few broken
// inputs.
func FuzzInspectResolve(f *testing.F) {
	data, err := os.ReadFile("../../testdata/testvectors.json")
	if err != nil {
		f.Fatal(err)
	}
	var file struct {
		Vectors []map[string]json.RawMessage `json:"vectors"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		f.Fatal(err)
	}
	for _, v := range file.Vectors {
		if string(v["kind"]) != `"state_resolution"` {
			continue
		}
		input, err := json.Marshal(map[string]json.RawMessage{"room_version": v["room_version"], "pdus": v["pdus"], "state_sets": v["state_sets"]})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(input)
	}
	f.Add([]byte(`{"room_version": "12", "pdus": [{"event_id": "$a", "type": "m.room.create", "state_key": "", "sender": "@a:x", "content": {}, "auth_events": ["$a"], "prev_events": []}], "state_sets": [["$a"], []]}`))
	f.Add([]byte(`{"room_version": "10", "pdus": [{"event_id": 5}], "state_sets": [[]]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, input []byte) {
		var stdout, stderr bytes.Buffer
		switch code := runMain([]string{"inspect", "resolve"}, bytes.NewReader(input), &stdout, &stderr); code {
		case 0:
			var out struct {
				State map[string]string `json:"state"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || out.State == nil {
				t.Fatalf("exit 0 with output %q", stdout.String())
			}
		case 1:
			if stderr.Len() == 0 || stdout.Len() != 0 {
				t.Fatalf("exit 1 with stdout %q, stderr %q", stdout.String(), stderr.String())
			}
		default:
			t.Fatalf("exit %d", code)
		}
	})
}
