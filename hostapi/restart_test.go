package hostapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
)

// TestStream_RestartMidBurst is the acceptance test of the stream's
// durability: a consumer follows the event stream (SSE) while 1,000
// messages are sent; the whole server (host API, engine, store) is
// closed in the middle of the burst and opened again on the same data
// directory and address. The sender retries what failed with the same
// txn_id, the consumer reconnects with its last event ID, and in the end
// the consumer has read every item of the host log exactly once, in
// order: no gap, no repeat, no reordering.
func TestStream_RestartMidBurst(t *testing.T) {
	const total = 1000
	dir := t.TempDir()
	n := openNode(t, dir, "127.0.0.1:0", nil)
	addr := n.srv.Addr().String()
	base := n.url
	n.register(alice)
	roomID := n.createRoom(alice, nil)
	start := n.head()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The consumer: follows the stream, reconnecting after any failure
	// with the id of the last item it read.
	type seen struct {
		pos  string
		body string
	}
	var (
		mu       sync.Mutex
		consumed []seen
	)
	consumerDone := make(chan error, 1)
	go func() {
		last := start
		reconnects := 0
		for {
			stream, err := openStream(ctx, base, "", last)
			if err != nil {
				if ctx.Err() != nil {
					consumerDone <- fmt.Errorf("consumer: %w (after %d reconnects)", ctx.Err(), reconnects)
					return
				}
				reconnects++
				time.Sleep(20 * time.Millisecond)
				continue
			}
			for {
				f, it, err := stream.nextItem()
				if err != nil {
					break
				}
				var body string
				if it.Kind == "event" {
					var ev struct {
						Content struct {
							Body string `json:"body"`
						} `json:"content"`
					}
					if err := json.Unmarshal(it.Event, &ev); err != nil {
						consumerDone <- fmt.Errorf("item %s: %w", f.id, err)
						return
					}
					body = ev.Content.Body
				}
				mu.Lock()
				consumed = append(consumed, seen{pos: f.id, body: body})
				mu.Unlock()
				last = f.id
				if body == "m"+strconv.Itoa(total-1) {
					stream.close()
					t.Logf("consumer: %d reconnection attempts", reconnects)
					consumerDone <- nil
					return
				}
			}
			stream.close()
		}
	}()

	// The sender: sends m0..m999 with txn IDs, retrying each until the
	// server answers it.
	halfway := make(chan struct{})
	senderDone := make(chan error, 1)
	go func() {
		client := &http.Client{Timeout: 30 * time.Second}
		for i := range total {
			if i == total/2 {
				close(halfway)
			}
			body, _ := json.Marshal(map[string]any{
				"sender": alice, "type": "m.room.message", "txn_id": "burst-" + strconv.Itoa(i),
				"content": map[string]any{"msgtype": "m.text", "body": "m" + strconv.Itoa(i)},
			})
			for {
				if ctx.Err() != nil {
					senderDone <- fmt.Errorf("sender stopped at m%d: %w", i, ctx.Err())
					return
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/_ferry/v1/rooms/"+esc(roomID)+"/send", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						break
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		senderDone <- nil
	}()

	// Mid-burst: close everything and open it again on the same data
	// directory and address.
	select {
	case <-halfway:
	case <-ctx.Done():
		t.Fatal("the burst never reached its middle")
	}
	n.close()
	mu.Lock()
	t.Logf("closed with %d items consumed", len(consumed))
	mu.Unlock()
	n = openNode(t, dir, addr, nil)
	if n.url != base {
		t.Fatalf("reopened at %s, not %s", n.url, base)
	}

	if err := <-senderDone; err != nil {
		t.Fatal(err)
	}
	if err := <-consumerDone; err != nil {
		t.Fatal(err)
	}

	// The log as the host reads it from the start.
	log := readAll(t, n, start)
	mu.Lock()
	defer mu.Unlock()
	if len(consumed) != len(log) {
		t.Fatalf("the consumer read %d items, the log holds %d after %s", len(consumed), len(log), start)
	}
	next := 0
	for i, c := range consumed {
		if c.pos != log[i].Pos {
			t.Fatalf("item %d: the consumer read position %s, the log has %s there", i, c.pos, log[i].Pos)
		}
		if c.body == "" {
			continue
		}
		if c.body != "m"+strconv.Itoa(next) {
			t.Fatalf("item %d (pos %s) is %s, want m%d: a gap, repeat or reordering", i, c.pos, c.body, next)
		}
		next++
	}
	if next != total {
		t.Errorf("the consumer read %d messages, want %d", next, total)
	}
}

// readAll reads every item after since with long polls of up to 1,000.
func readAll(t *testing.T, n *node, since string) []streamItem {
	t.Helper()
	var out []streamItem
	for {
		page := n.poll(since, 0)
		if len(page.Items) == 0 {
			return out
		}
		out = append(out, page.Items...)
		since = page.Next
	}
}

// Positions are tokens the host may compare only for equality; here they
// are also checked to grow, as the contract promises order.
func TestStream_TokensGrow(t *testing.T) {
	n := newNode(t)
	n.register(alice)
	roomID := n.createRoom(alice, nil)
	for i := range 3 {
		n.send(roomID, alice, strconv.Itoa(i), "")
	}
	items := readAll(t, n, "0")
	prev := int64(0)
	for _, it := range items {
		pos, err := strconv.ParseInt(it.Pos, 10, 64)
		if err != nil || pos <= prev {
			t.Fatalf("position %q after %d", it.Pos, prev)
		}
		prev = pos
		if it.Kind == "event" && !strings.HasPrefix(it.eventField(t, "event_id"), "$") {
			t.Errorf("item %s has no event_id", it.Pos)
		}
	}
	if homeserver.StreamToken(prev) != n.head() {
		t.Errorf("last position %d, head %s", prev, n.head())
	}
}
