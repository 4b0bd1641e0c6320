package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

// staticFetcher serves fixed key documents and knows no notary.
type staticFetcher map[string][]byte

func (f staticFetcher) FetchServerKeys(_ context.Context, server string) ([]byte, error) {
	if d, ok := f[server]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("%s unreachable", server)
}

func (f staticFetcher) QueryServerKeys(context.Context, string, []keys.KeyQuery) ([][]byte, error) {
	return nil, errors.New("no notary")
}

// authedTestServer serves handler behind X-Matrix authentication as
// b.test, trusting the keys of origin (signed by originKey).
func authedTestServer(t *testing.T, originKey rooms.SigningKey, originOwn *keys.Own, modify func(*Server), handler authedHandlerFunc) *httptest.Server {
	t.Helper()
	doc, err := keys.ServerKeyDocument(originKey.ServerName, originOwn, time.Now().Add(time.Hour).UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	own := testKeys(t, 2)
	ring, err := keys.NewRing(keys.RingConfig{ServerName: "b.test", Own: own, Fetcher: staticFetcher{originKey.ServerName: doc}})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer("b.test", own)
	s.KeyRing = ring
	if modify != nil {
		modify(s)
	}
	ts := httptest.NewServer(s.handle(s.authed(handler)))
	t.Cleanup(ts.Close)
	return ts
}

func sendSigned(t *testing.T, ts *httptest.Server, key rooms.SigningKey, method, uri string, body []byte, sign bool) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+uri, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if sign {
		req.Header.Set("Authorization", signedHeader(t, key, "b.test", method, uri, body))
	} else {
		// Signed over an empty object: only the size or parse check can
		// answer, and it must come before anything else reads the body.
		req.Header.Set("Authorization", signedHeader(t, key, "b.test", method, uri, []byte(`{}`)))
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// maximalTransaction builds a /send body of 50 PDUs whose canonical JSON
// is exactly 65536 bytes each and 100 EDUs of edu bytes of padding.
func maximalTransaction(t *testing.T, eduPadding int) []byte {
	t.Helper()
	pdu := func(i int) map[string]any {
		base := map[string]any{
			"type": "m.room.message", "room_id": "!r:a.test", "sender": "@u:a.test", "origin_server_ts": int64(1700000000000),
			"depth": int64(i), "prev_events": []any{}, "auth_events": []any{}, "hashes": map[string]any{"sha256": strings.Repeat("A", 43)},
			"signatures": map[string]any{"a.test": map[string]any{"ed25519:k": strings.Repeat("B", 86)}},
			"content":    map[string]any{"msgtype": "m.text", "body": ""},
		}
		raw, err := rooms.EncodeCanonical(base)
		if err != nil {
			t.Fatal(err)
		}
		base["content"].(map[string]any)["body"] = strings.Repeat("x", 65536-len(raw))
		if raw, _ = rooms.EncodeCanonical(base); len(raw) != 65536 {
			t.Fatalf("PDU is %d bytes", len(raw))
		}
		return base
	}
	pdus := make([]any, 50)
	for i := range pdus {
		pdus[i] = pdu(i)
	}
	edus := make([]any, 100)
	for i := range edus {
		edus[i] = map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": "!r:a.test", "pad": strings.Repeat("y", eduPadding)}}
	}
	body, err := rooms.EncodeCanonical(map[string]any{"origin": "a.test", "origin_server_ts": int64(1700000000000), "pdus": pdus, "edus": edus})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestLimits_RequestBodies(t *testing.T) {
	originOwn := testKeys(t, 3)
	originKey := originOwn.Signer("a.test")
	var got atomic.Int64
	ts := authedTestServer(t, originKey, originOwn, nil, func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		pdus, _ := in.Content.(map[string]any)["pdus"].([]any)
		got.Store(int64(len(pdus)))
		writeJSON(w, http.StatusOK, map[string]any{"pdus": map[string]any{}})
		return nil
	})
	const uri = "/_matrix/federation/v1/send/txn1"

	// 50 maximal PDUs and 100 EDUs of 16 KiB fit in the default limit.
	txn := maximalTransaction(t, 16<<10)
	if int64(len(txn)) >= DefaultMaxRequestBodyBytes {
		t.Fatalf("test transaction %d bytes already exceeds the limit", len(txn))
	}
	if status, body := sendSigned(t, ts, originKey, "PUT", uri, txn, true); status != 200 || got.Load() != 50 {
		t.Fatalf("maximal transaction: %d %v (saw %d PDUs)", status, body, got.Load())
	}

	tooBig := append([]byte(`{"pad":"`), bytes.Repeat([]byte("z"), DefaultMaxRequestBodyBytes)...)
	tooBig = append(tooBig, `"}`...)
	cases := []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"over the limit", tooBig, 413, "M_TOO_LARGE"},
		{"not JSON", []byte(`{"pdus": [`), 400, "M_NOT_JSON"},
		{"duplicate keys", []byte(`{"a": 1, "a": 2}`), 400, "M_NOT_JSON"},
		{"not an object", []byte(`[1, 2]`), 400, "M_BAD_JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := sendSigned(t, ts, originKey, "PUT", uri, tc.body, false)
			if status != tc.status || body["errcode"] != tc.code {
				t.Fatalf("got %d %v, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}

	// A configured limit applies exactly.
	small := authedTestServer(t, originKey, originOwn, func(s *Server) { s.MaxRequestBodyBytes = 64 }, func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		writeJSON(w, http.StatusOK, map[string]any{})
		return nil
	})
	fits := []byte(`{"p":"` + strings.Repeat("a", 64-8) + `"}`)
	if status, body := sendSigned(t, small, originKey, "PUT", uri, fits, true); status != 200 {
		t.Fatalf("64-byte body with a 64-byte limit: %d %v", status, body)
	}
	over := []byte(`{"p":"` + strings.Repeat("a", 65-8) + `"}`)
	if status, body := sendSigned(t, small, originKey, "PUT", uri, over, true); status != 413 || body["errcode"] != "M_TOO_LARGE" {
		t.Fatalf("65-byte body with a 64-byte limit: %d %v", status, body)
	}
}

func TestLimits_ConcurrencyPerOrigin(t *testing.T) {
	originOwn := testKeys(t, 3)
	originKey := originOwn.Signer("a.test")
	otherOwn := testKeys(t, 4)
	otherKey := otherOwn.Signer("c.test")
	release := make(chan struct{})
	var inside atomic.Int64
	handler := func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		if in.Origin == "a.test" {
			inside.Add(1)
			<-release
		}
		writeJSON(w, http.StatusOK, map[string]any{})
		return nil
	}
	// Two origins' keys are known to the ring.
	docA, _ := keys.ServerKeyDocument("a.test", originOwn, time.Now().Add(time.Hour).UnixMilli())
	docC, _ := keys.ServerKeyDocument("c.test", otherOwn, time.Now().Add(time.Hour).UnixMilli())
	own := testKeys(t, 2)
	ring, err := keys.NewRing(keys.RingConfig{ServerName: "b.test", Own: own, Fetcher: staticFetcher{"a.test": docA, "c.test": docC}})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer("b.test", own)
	s.KeyRing = ring
	s.MaxConcurrentPerOrigin = 2
	ts := httptest.NewServer(s.handle(s.authed(handler)))
	defer ts.Close()
	const uri = "/_matrix/federation/v1/query/profile?user_id=%40x%3Ab.test"

	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", ts.URL+uri, nil)
			req.Header.Set("Authorization", signedHeader(t, originKey, "b.test", "GET", uri, nil))
			if resp, err := ts.Client().Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for inside.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the first two requests never reached the handler")
		}
		time.Sleep(time.Millisecond)
	}
	status, body := sendSigned(t, ts, originKey, "GET", uri, nil, true)
	if status != 429 || body["errcode"] != "M_LIMIT_EXCEEDED" || body["retry_after_ms"] != float64(retryAfterMS) {
		t.Fatalf("third concurrent request: %d %v, want 429 M_LIMIT_EXCEEDED with retry_after_ms", status, body)
	}
	// Another origin is not affected.
	if status, body := sendSigned(t, ts, otherKey, "GET", uri, nil, true); status != 200 {
		t.Fatalf("other origin: %d %v", status, body)
	}
	close(release)
	wg.Wait()
	// Slots are given back once the handlers have returned.
	for {
		s.limiter().mu.Lock()
		left := len(s.limiter().inflight)
		s.limiter().mu.Unlock()
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d origins still hold slots", left)
		}
		time.Sleep(time.Millisecond)
	}
	if status, body := sendSigned(t, ts, originKey, "GET", uri, nil, true); status != 200 {
		t.Fatalf("after release: %d %v", status, body)
	}
}
