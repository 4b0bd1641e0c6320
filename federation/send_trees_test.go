package federation

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
)

// TestSend_LenientBody: a transaction whose body parses only leniently
// (an unknown envelope key holding 1.0) is still processed, from the PDUs'
// own bytes rather than from the leniently parsed body, and a PDU in a
// strict body is judged from the tree the X-Matrix check made of it.
func TestSend_LenientBody(t *testing.T) {
	w := newInboundWorld(t, "10")
	join := w.join(t, "lenient-join", bob)
	first := w.message(bob, "from a lenient body", []string{join.EventID()})
	second := w.message(bob, "from a strict body", []string{first.EventID()})

	send := func(txnID string, body []byte) (int, map[string]any) {
		t.Helper()
		uri := "/_matrix/federation/v1/send/" + txnID
		content, err := rooms.ParseJSONLenient(body)
		if err != nil {
			t.Fatal(err)
		}
		x, err := SignRequest(w.remote.signer, "ferry.test", http.MethodPut, uri, content)
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPut, w.ferry.ts.URL+uri, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", x.String())
		req.Header.Set("Content-Type", "application/json")
		// The test's own client: what is under test is the server.
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("answer %s: %v", raw, err)
		}
		return resp.StatusCode, out
	}
	lenient := append(append([]byte(`{"extra":1.0,"origin":"remote.test","origin_server_ts":1,"pdus":[`), first.JSON()...), "]}"...)
	status, out := send("lenient-1", lenient)
	pdus, _ := out["pdus"].(map[string]any)
	if status != http.StatusOK || pdus[first.EventID()] == nil || len(pdus[first.EventID()].(map[string]any)) != 0 {
		t.Fatalf("lenient body: %d %v", status, out)
	}
	strict := append(append([]byte(`{"origin":"remote.test","origin_server_ts":1,"pdus":[`), second.JSON()...), "]}"...)
	status, out = send("strict-1", strict)
	pdus, _ = out["pdus"].(map[string]any)
	if status != http.StatusOK || pdus[second.EventID()] == nil || len(pdus[second.EventID()].(map[string]any)) != 0 {
		t.Fatalf("strict body: %d %v", status, out)
	}
	for _, id := range []string{first.EventID(), second.EventID()} {
		if _, err := w.ferry.db.Event(t.Context(), id); err != nil {
			t.Fatalf("%s not stored: %v", id, err)
		}
	}
}
