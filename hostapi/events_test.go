package hostapi_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/hostapi"
)

// head returns the token of the newest item of the host log.
func (n *node) head() string {
	n.t.Helper()
	pos, err := n.db.HostLogHead(context.Background())
	if err != nil {
		n.t.Fatal(err)
	}
	return homeserver.StreamToken(pos)
}

func TestServer_SendTxnID(t *testing.T) {
	n := newNode(t)
	n.register(alice)
	roomID := n.createRoom(alice, nil)
	start := n.head()
	first := n.send(roomID, alice, "once", "txn-1")
	again := n.send(roomID, alice, "once, retried", "txn-1")
	if first != again {
		t.Errorf("the same txn_id gave %s then %s", first, again)
	}
	other := n.send(roomID, alice, "twice", "txn-2")
	if other == first {
		t.Error("another txn_id gave the same event")
	}
	page := n.poll(start, 0)
	if len(page.Items) != 2 || page.Items[0].eventField(t, "event_id") != first || page.Items[1].eventField(t, "event_id") != other {
		t.Errorf("stream after the sends: %+v", page.Items)
	}
	if body := page.Items[0].eventField(t, "content", "body"); body != "once" {
		t.Errorf("the retried send changed the event: body %q", body)
	}
}

func TestEvents_LongPoll(t *testing.T) {
	n := newNode(t)
	n.register(alice)
	roomID := n.createRoom(alice, nil)
	since := n.head()

	// Nothing new: the answer comes with no items and next == since.
	page := n.poll(since, 0)
	if len(page.Items) != 0 || page.Next != since {
		t.Errorf("empty poll = %+v, want no items and next %s", page, since)
	}
	page = n.poll(since, 1)
	if len(page.Items) != 0 || page.Next != since {
		t.Errorf("poll that timed out = %+v", page)
	}

	// A poll waiting for up to a minute is answered by the next event.
	got := make(chan eventsPage, 1)
	go func() {
		got <- n.on(t).poll(since, 60000)
	}()
	time.Sleep(50 * time.Millisecond) // let the poll start waiting; the result does not depend on it
	eventID := n.send(roomID, alice, "wake up", "")
	page = <-got
	if len(page.Items) != 1 || page.Items[0].eventField(t, "event_id") != eventID || page.Next != page.Items[0].Pos {
		t.Fatalf("woken poll = %+v, want the event %s", page, eventID)
	}
	if page.Items[0].Kind != "event" || page.Items[0].RoomID != roomID || page.Items[0].eventField(t, "content", "body") != "wake up" {
		t.Errorf("item = %+v", page.Items[0])
	}

	// The limit bounds a page; next continues where it stopped.
	for i := range 5 {
		n.send(roomID, alice, strconv.Itoa(i), "")
	}
	var small eventsPage
	n.must(http.MethodGet, "/_ferry/v1/events?limit=2&since="+page.Next, nil).json(t, &small)
	if len(small.Items) != 2 || small.Next != small.Items[1].Pos {
		t.Fatalf("limited page = %+v", small)
	}
	rest := n.poll(small.Next, 0)
	if len(rest.Items) != 3 || rest.Items[0].eventField(t, "content", "body") != "2" {
		t.Errorf("rest = %+v", rest)
	}
}

func TestEvents_SSE(t *testing.T) {
	n := openNode(t, t.TempDir(), "127.0.0.1:0", func(c *hostapi.Config) { c.KeepAlive = 20 * time.Millisecond })
	n.register(alice)
	roomID := n.createRoom(alice, nil)
	since := n.head()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	stream, err := openStream(ctx, n.url, since, "")
	if err != nil {
		t.Fatal(err)
	}
	var sent []string
	for i := range 3 {
		sent = append(sent, n.send(roomID, alice, "m"+strconv.Itoa(i), ""))
	}
	var ids []string
	for i := range 3 {
		f, it, err := stream.nextItem()
		if err != nil {
			t.Fatal(err)
		}
		if f.event != "event" || f.id != it.Pos || it.eventField(t, "event_id") != sent[i] {
			t.Errorf("frame %d = %+v, item %+v, want event %s", i, f, it, sent[i])
		}
		ids = append(ids, f.id)
	}
	// With nothing to send, the stream sends keepalive comments.
	f, err := stream.next()
	if err != nil || f.comment != "keepalive" {
		t.Errorf("idle stream sent %+v, %v; want a keepalive comment", f, err)
	}
	stream.close()

	// Reconnecting with Last-Event-ID resumes after it; it wins over
	// since.
	stream, err = openStream(ctx, n.url, "0", ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer stream.close()
	for i := 1; i < 3; i++ {
		f, _, err := stream.nextItem()
		if err != nil {
			t.Fatal(err)
		}
		if f.id != ids[i] {
			t.Errorf("resumed frame id %s, want %s", f.id, ids[i])
		}
	}

	// A bad Last-Event-ID is refused before the stream starts.
	if _, err := openStream(ctx, n.url, "", "nope"); err == nil {
		t.Error("Last-Event-ID nope was accepted")
	}
}

// TestServer_CloseEndsStreams shows Close ending long polls and event
// streams at once rather than waiting for their timeouts.
func TestServer_CloseEndsStreams(t *testing.T) {
	n := newNode(t)
	since := n.head()
	ctx := context.Background()
	stream, err := openStream(ctx, n.url, since, "")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.close()
	polled := make(chan response, 1)
	go func() {
		polled <- n.on(t).request(http.MethodGet, "/_ferry/v1/events?timeout_ms=60000&since="+since, nil)
	}()
	time.Sleep(50 * time.Millisecond) // let the poll start waiting; the result does not depend on it

	closeCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.srv.Close(closeCtx); err != nil {
		t.Fatalf("close: %v (streams kept it waiting)", err)
	}
	r := <-polled
	var page eventsPage
	if r.status == http.StatusOK {
		r.json(t, &page)
	}
	if r.status != http.StatusOK || len(page.Items) != 0 || page.Next != since {
		t.Errorf("long poll at close: %d %s", r.status, r.body)
	}
	if _, err := stream.next(); err != io.EOF {
		t.Errorf("event stream at close: %v, want its end", err)
	}
}
