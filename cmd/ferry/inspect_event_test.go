package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
)

const inspectRoomV12 = "!BeXKh925K_M46DwsuJFR0EyBpE1P7CFUDGuWW4xw55Y"

func inspectTestKey(server string) rooms.SigningKey {
	seed := sha256.Sum256([]byte("inspect event test " + server))
	return rooms.SigningKey{ServerName: server, KeyID: "ed25519:k1", Private: ed25519.NewKeyFromSeed(seed[:])}
}

// writeKeysFile writes a --keys file holding the public halves of ks.
func writeKeysFile(t *testing.T, ks ...rooms.SigningKey) string {
	t.Helper()
	m := map[string]map[string]string{}
	for _, k := range ks {
		if m[k.ServerName] == nil {
			m[k.ServerName] = map[string]string{}
		}
		m[k.ServerName][k.KeyID] = rooms.EncodeBase64(k.PublicKey())
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func buildInspectMessage(t *testing.T, v rooms.Version, key rooms.SigningKey) *rooms.Event {
	t.Helper()
	roomID := "!room:example.org"
	if v.RoomIDs == rooms.RoomIDFromCreate {
		roomID = inspectRoomV12
	}
	ev, err := rooms.BuildEvent(v, rooms.EventTemplate{
		Type:           "m.room.message",
		Sender:         "@alice:" + key.ServerName,
		RoomID:         roomID,
		Content:        map[string]any{"msgtype": "m.text", "body": "Hello world"},
		PrevEvents:     []string{"$4FbpZrgPQTwoLD9H5y7jcikucCypUOn78mXhQX7WliY"},
		AuthEvents:     []string{"$gbHO7IPUHybc7ULFnT7P0r3iWlZFHGmr6zBfEYCUyKw"},
		Depth:          5,
		OriginServerTS: 1_700_000_000_000,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// runInspectEventCmd runs `ferry inspect event args...` on input and
// decodes the report.
func runInspectEventCmd(t *testing.T, input []byte, args ...string) (inspectEventReport, int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runMain(append([]string{"inspect", "event"}, args...), bytes.NewReader(input), &stdout, &stderr)
	var report inspectEventReport
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
			t.Fatalf("output is not a report: %v\n%s", err, stdout.String())
		}
	}
	return report, code, stderr.String()
}

func TestInspectEvent_RoundTrip(t *testing.T) {
	key := inspectTestKey("example.org")
	keysFile := writeKeysFile(t, key)
	for _, v := range rooms.SupportedVersions() {
		t.Run("v"+v.ID, func(t *testing.T) {
			ev := buildInspectMessage(t, v, key)
			report, code, stderr := runInspectEventCmd(t, ev.JSON(), "--room-version", v.ID, "--keys", keysFile)
			if code != 0 {
				t.Fatalf("exit %d, stderr %s, report %+v", code, stderr, report)
			}
			if report.EventID != ev.EventID() || report.RoomID != ev.RoomID() || report.RoomVersion != v.ID {
				t.Fatalf("report %+v, event %s in %s", report, ev.EventID(), ev.RoomID())
			}
			if !report.ContentHashValid || len(report.Errors) != 0 || report.SignatureCheck != "ok" {
				t.Fatalf("report %+v", report)
			}
			if got := report.Signatures[key.ServerName][key.KeyID]; got != sigVerdictValid {
				t.Fatalf("signature %q", got)
			}
			if report.SizeBytes != len(ev.JSON()) {
				t.Fatalf("size %d, want %d", report.SizeBytes, len(ev.JSON()))
			}
			var redacted map[string]any
			if err := json.Unmarshal(report.Redacted, &redacted); err != nil {
				t.Fatal(err)
			}
			if content, _ := redacted["content"].(map[string]any); len(content) != 0 {
				t.Fatalf("redacted content %v", content)
			}

			// One content byte changed: the hash breaks, the signature,
			// which covers only the redacted form, still holds.
			flipped := bytes.Replace(ev.JSON(), []byte(`"Hello world"`), []byte(`"Jello world"`), 1)
			if bytes.Equal(flipped, ev.JSON()) {
				t.Fatal("body not found in event JSON")
			}
			report, code, _ = runInspectEventCmd(t, flipped, "--room-version", v.ID, "--keys", keysFile)
			if code != 1 || report.ContentHashValid || report.SignatureCheck != "ok" || report.Signatures[key.ServerName][key.KeyID] != sigVerdictValid {
				t.Fatalf("content flip: exit %d, report %+v", code, report)
			}
			if report.EventID != ev.EventID() {
				t.Fatalf("content flip changed the event ID: %s", report.EventID)
			}

			// The type is covered by the signature.
			retyped := bytes.Replace(ev.JSON(), []byte(`"m.room.message"`), []byte(`"m.room.messagf"`), 1)
			report, code, _ = runInspectEventCmd(t, retyped, "--room-version", v.ID, "--keys", keysFile)
			if code != 1 || report.Signatures[key.ServerName][key.KeyID] != sigVerdictInvalid || report.SignatureCheck == "ok" {
				t.Fatalf("type flip: exit %d, report %+v", code, report)
			}
			if !strings.Contains(report.SignatureCheck, "does not verify") {
				t.Fatalf("signature check says %q", report.SignatureCheck)
			}
		})
	}
}

func TestInspectEvent_CreateEventNamesVersion(t *testing.T) {
	key := inspectTestKey("example.org")
	v12, err := rooms.LookupVersion("12")
	if err != nil {
		t.Fatal(err)
	}
	create, err := rooms.BuildEvent(v12, rooms.EventTemplate{
		Type: "m.room.create", StateKey: rooms.StringPtr(""), Sender: "@alice:example.org",
		Content: map[string]any{"room_version": "12"}, Depth: 1, OriginServerTS: 1_700_000_000_000,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	report, code, stderr := runInspectEventCmd(t, create.JSON())
	if code != 0 || report.RoomVersion != "12" || report.RoomID != create.RoomID() || !strings.HasPrefix(report.RoomID, "!") || report.RoomID[1:] != create.EventID()[1:] {
		t.Fatalf("exit %d (%s), report %+v", code, stderr, report)
	}
}

func TestInspectEvent_Problems(t *testing.T) {
	key := inspectTestKey("example.org")
	v10, err := rooms.LookupVersion("10")
	if err != nil {
		t.Fatal(err)
	}
	good := buildInspectMessage(t, v10, key).JSON()
	cases := []struct {
		name  string
		input []byte
		want  string
	}{
		{"float", bytes.Replace(good, []byte(`"depth":5`), []byte(`"depth":5.5`), 1), "only integers"},
		{"exponent", bytes.Replace(good, []byte(`"depth":5`), []byte(`"depth":5e0`), 1), "only integers"},
		{"duplicate key", bytes.Replace(good, []byte(`"depth":5`), []byte(`"depth":5,"depth":6`), 1), "duplicate key"},
		{"long type", bytes.Replace(good, []byte(`"m.room.message"`), []byte(`"`+strings.Repeat("t", 256)+`"`), 1), "type: 256 bytes, more than 255"},
		{"bad sender", bytes.Replace(good, []byte(`"@alice:example.org"`), []byte(`"alice"`), 1), "sender:"},
		{"opaque room in v12 shape", bytes.Replace(good, []byte(`"!room:example.org"`), []byte(`"!`+inspectRoomV12[1:]+`"`), 1), "room_id:"},
		{"too many prev events", bytes.Replace(good, []byte(`"prev_events":[`), []byte(`"prev_events":[`+strings.Repeat(`"$4FbpZrgPQTwoLD9H5y7jcikucCypUOn78mXhQX7WliY",`, 20)), 1), "prev_events: 21 entries, more than 20"},
		{"too big", bytes.Replace(good, []byte(`"Hello world"`), []byte(`"`+strings.Repeat("x", 70000)+`"`), 1), "more than 65536"},
		{"not an object", []byte(`[1,2]`), "not a JSON object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			report, code, stderr := runInspectEventCmd(t, c.input, "--room-version", "10")
			if code != 1 {
				t.Fatalf("exit %d (%s), report %+v", code, stderr, report)
			}
			if !strings.Contains(strings.Join(report.Errors, "\n"), c.want) {
				t.Fatalf("errors %q do not mention %q", report.Errors, c.want)
			}
		})
	}
}

func TestInspectEvent_UnknownKeyAndUsage(t *testing.T) {
	key := inspectTestKey("example.org")
	other := inspectTestKey("other.example")
	v10, err := rooms.LookupVersion("10")
	if err != nil {
		t.Fatal(err)
	}
	ev := buildInspectMessage(t, v10, key)
	report, code, _ := runInspectEventCmd(t, ev.JSON(), "--room-version", "10", "--keys", writeKeysFile(t, other))
	if code != 1 || report.Signatures[key.ServerName][key.KeyID] != sigVerdictUnknown || report.SignatureCheck == "ok" {
		t.Fatalf("exit %d, report %+v", code, report)
	}

	usage := []struct {
		name string
		args []string
		want string
	}{
		{"unsupported version", []string{"--room-version", "11"}, `unsupported room version "11"`},
		{"ietf name", []string{"--room-version", "I.1"}, "IETF name of room version 10"},
		{"no version for a message", nil, "--room-version is needed"},
		{"missing keys file", []string{"--room-version", "10", "--keys", filepath.Join(t.TempDir(), "none.json")}, "--keys"},
		{"stray argument", []string{"extra"}, "unexpected argument"},
	}
	for _, c := range usage {
		t.Run(c.name, func(t *testing.T) {
			_, code, stderr := runInspectEventCmd(t, ev.JSON(), c.args...)
			if code != 2 || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, stderr %q, want %q", code, stderr, c.want)
			}
		})
	}
}
