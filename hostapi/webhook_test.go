package hostapi_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/hostapi"
)

const webhookSecret = "webhook-secret"

// receiver is a webhook endpoint: it checks each request's signature,
// fails the first few requests on purpose, and records the batches it
// acknowledged.
type receiver struct {
	t testing.TB

	mu sync.Mutex
	// failNext is how many requests still get a 500.
	failNext int
	failed   int
	// batches are the acknowledged batches, in the order received.
	batches []webhookBody
}

type webhookBody struct {
	TxnID string       `json:"txn_id"`
	Items []streamItem `json:"items"`
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// Verify the signature as a host would: HMAC-SHA256 of the exact
	// body, compared in constant time.
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if got := r.Header.Get("X-Ferry-Signature"); !hmac.Equal([]byte(got), []byte(want)) {
		rc.t.Errorf("signature %q, want %q", got, want)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		rc.t.Errorf("%s with content type %q", r.Method, r.Header.Get("Content-Type"))
	}
	var batch webhookBody
	if err := json.Unmarshal(body, &batch); err != nil {
		rc.t.Errorf("batch %s: %v", body, err)
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.failNext > 0 {
		rc.failNext--
		rc.failed++
		http.Error(w, "down for maintenance", http.StatusInternalServerError)
		return
	}
	rc.batches = append(rc.batches, batch)
	w.WriteHeader(http.StatusNoContent)
}

// positions returns the positions acknowledged, batch after batch, with
// repeated batches (the same txn_id) counted once.
func (rc *receiver) positions() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	seen := map[string]bool{}
	for _, b := range rc.batches {
		if seen[b.TxnID] {
			continue
		}
		seen[b.TxnID] = true
		for _, it := range b.Items {
			out = append(out, it.Pos)
		}
	}
	return out
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWebhook_Acceptance: the receiver is first unreachable (connection
// refused), then answers 500 a few times, then recovers: it ends with
// every item of the log at least once, in order, each batch signed; the
// cursor follows what was acknowledged, and a restarted server resumes
// delivery from it.
func TestWebhook_Acceptance(t *testing.T) {
	// An address nobody listens on yet: the receiver comes up later.
	reserved, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := reserved.Addr().String()
	reserved.Close()

	dir := t.TempDir()
	configure := func(c *hostapi.Config) {
		c.WebhookURL = "http://" + addr + "/hook"
		c.WebhookSecret = webhookSecret
		c.WebhookMinBackoff = 5 * time.Millisecond
		c.WebhookMaxBackoff = 50 * time.Millisecond
	}
	n := openNode(t, dir, "127.0.0.1:0", configure)
	n.register(alice)
	roomID := n.createRoom(alice, nil)
	for i := range 150 {
		n.send(roomID, alice, "m"+strconv.Itoa(i), "")
	}
	ctx := context.Background()
	if pos, err := n.db.Cursor(ctx, hostapi.WebhookCursor); err != nil || pos != 0 {
		t.Fatalf("cursor while the receiver is down = %d, %v; want 0", pos, err)
	}

	// The receiver comes up, failing its first three requests.
	rc := &receiver{t: t, failNext: 3}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the reserved address: %v", err)
	}
	hook := httptest.NewUnstartedServer(rc)
	hook.Listener.Close()
	hook.Listener = ln
	hook.Start()
	defer hook.Close()

	log := readAll(t, n, "0")
	want := make([]string, len(log))
	for i, it := range log {
		want[i] = it.Pos
	}
	head := n.head()
	waitFor(t, "every item at the receiver", func() bool { return len(rc.positions()) >= len(want) })
	got := rc.positions()
	if len(got) != len(want) {
		t.Fatalf("receiver has %d items, the log %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("item %d: position %s, want %s (order or gap)", i, got[i], want[i])
		}
	}
	rc.mu.Lock()
	if rc.failed != 3 {
		t.Errorf("the receiver failed %d requests, want 3 retried", rc.failed)
	}
	for _, b := range rc.batches {
		if len(b.Items) == 0 || len(b.Items) > 100 || b.TxnID != b.Items[0].Pos+"-"+b.Items[len(b.Items)-1].Pos {
			t.Errorf("batch %s with %d items", b.TxnID, len(b.Items))
		}
	}
	rc.mu.Unlock()
	waitFor(t, "the cursor at the head", func() bool {
		pos, err := n.db.Cursor(ctx, hostapi.WebhookCursor)
		return err == nil && strconv.FormatInt(pos, 10) == head
	})

	// Restart: delivery resumes after the cursor, nothing is sent twice.
	n.close()
	n = openNode(t, dir, "127.0.0.1:0", configure)
	before := len(rc.positions())
	for i := range 5 {
		n.send(roomID, alice, "after restart "+strconv.Itoa(i), "")
	}
	newItems := readAll(t, n, head)
	waitFor(t, "the new items at the receiver", func() bool { return len(rc.positions()) >= before+len(newItems) })
	got = rc.positions()[before:]
	if len(got) != len(newItems) {
		t.Fatalf("after the restart the receiver got %d items, want the %d new ones", len(got), len(newItems))
	}
	for i, it := range newItems {
		if got[i] != it.Pos {
			t.Fatalf("after the restart item %d is %s, want %s", i, got[i], it.Pos)
		}
	}
}

// TestWebhook_StopsWhileRetrying: closing the server while a batch is
// being retried stops the deliverer without moving the cursor.
func TestWebhook_StopsWhileRetrying(t *testing.T) {
	rc := &receiver{t: t, failNext: 1 << 30}
	hook := httptest.NewServer(rc)
	defer hook.Close()
	n := openNode(t, t.TempDir(), "127.0.0.1:0", func(c *hostapi.Config) {
		c.WebhookURL = hook.URL
		c.WebhookSecret = webhookSecret
		c.WebhookMinBackoff = time.Millisecond
		c.WebhookMaxBackoff = 5 * time.Millisecond
	})
	n.register(alice)
	n.createRoom(alice, nil)
	waitFor(t, "a few failed attempts", func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.failed >= 3
	})
	n.close()
	db := openNode(t, n.dir, "127.0.0.1:0", nil).db
	if pos, err := db.Cursor(context.Background(), hostapi.WebhookCursor); err != nil || pos != 0 {
		t.Errorf("cursor after failed deliveries = %d, %v; want 0", pos, err)
	}
}

func TestWebhook_Config(t *testing.T) {
	n := newNode(t)
	cases := map[string]hostapi.Config{
		"no secret":    {Host: n.host, Cursors: n.db, Token: "t", WebhookURL: "http://127.0.0.1:1/"},
		"relative URL": {Host: n.host, Cursors: n.db, Token: "t", WebhookURL: "/hook", WebhookSecret: "s"},
		"no cursors":   {Host: n.host, Token: "t", WebhookURL: "http://127.0.0.1:1/", WebhookSecret: "s"},
		"no token":     {Host: n.host},
		"no host":      {Token: "t"},
	}
	for name, cfg := range cases {
		if _, err := hostapi.New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func TestWebhookSignature(t *testing.T) {
	// HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"),
	// the example of the HMAC article.
	got := hostapi.WebhookSignature("key", []byte("The quick brown fox jumps over the lazy dog"))
	if want := "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"; got != want {
		t.Errorf("signature %s, want %s", got, want)
	}
}
