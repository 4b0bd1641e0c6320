package homeserver

import (
	"encoding/json"
	"fmt"
	"testing"
)

// TestTransactionBody: transactions are written as the canonical JSON of
// what they carry, with and without EDUs, and PDUs stored in another key
// order or spacing come out canonical.
func TestTransactionBody(t *testing.T) {
	var c canonicalPDUs
	stored := []string{
		`{"type":"m.room.message", "content":{"body":"<b>&amp;</b> é"},"room_id":"!r:a.test","depth":3}`,
		`{"room_id":"!r:a.test","content":{"n":100,"s":"\u0041\n"},"type":"m.room.message"}`,
	}
	var pdus []json.RawMessage
	for i, raw := range stored {
		b, err := c.get(fmt.Sprintf("$%d", i), []byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		pdus = append(pdus, b)
	}
	again, err := c.get("$0", []byte(`not consulted: cached`))
	if err != nil || string(again) != string(pdus[0]) {
		t.Fatalf("cached PDU %s, %v", again, err)
	}
	edu, err := canonicalJSON([]byte(`{"edu_type":"m.typing","content":{"user_id":"@u:a.test","typing":true,"room_id":"!r:a.test"}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, edus := range [][]json.RawMessage{nil, {edu}} {
		body, err := transactionBody("a.test", 1234, pdus, edus)
		if err != nil {
			t.Fatal(err)
		}
		canon, err := canonicalJSON(body)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if string(canon) != string(body) {
			t.Fatalf("body is not canonical:\n%s\nwant\n%s", body, canon)
		}
		var decoded struct {
			Origin string            `json:"origin"`
			TS     int64             `json:"origin_server_ts"`
			PDUs   []json.RawMessage `json:"pdus"`
			EDUs   []json.RawMessage `json:"edus"`
		}
		if err := json.Unmarshal(body, &decoded); err != nil || decoded.Origin != "a.test" || decoded.TS != 1234 || len(decoded.PDUs) != 2 || len(decoded.EDUs) != len(edus) {
			t.Fatalf("decoded %+v, %v", decoded, err)
		}
	}
	if _, err := c.get("$bad", []byte(`{"unterminated":`)); err == nil {
		t.Fatal("a PDU that is not JSON was accepted")
	}
}

// TestCanonicalPDUs_Bounded: the cache keeps at most canonicalPDUsKept
// entries, dropping the oldest.
func TestCanonicalPDUs_Bounded(t *testing.T) {
	var c canonicalPDUs
	for i := range canonicalPDUsKept + 10 {
		if _, err := c.get(fmt.Sprintf("$%d", i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.byID) != canonicalPDUsKept || len(c.order) != canonicalPDUsKept {
		t.Fatalf("cache holds %d (%d in order), want %d", len(c.byID), len(c.order), canonicalPDUsKept)
	}
	if _, ok := c.byID["$0"]; ok {
		t.Fatal("the oldest entry was kept")
	}
}
