package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Kinds of stream items.
const (
	KindEvent  = "event"  // an event accepted into a room
	KindInvite = "invite" // an invite of a local user
	KindKnock  = "knock"  // a knock on a room of ours
	KindEDU    = "edu"    // typing, receipts
)

// Item is one entry of the host event stream.
type Item struct {
	// Pos is the item's position: pass it as since to continue after it.
	Pos    string `json:"pos"`
	Kind   string `json:"kind"`
	RoomID string `json:"room_id"`
	// Event is the PDU with its event_id, for kinds event, invite, knock.
	Event json.RawMessage `json:"event,omitempty"`
	// EDU is {"type", "content"}, for kind edu.
	EDU json.RawMessage `json:"edu,omitempty"`
}

// EventsPage is one answer of the long-poll stream endpoint. Next is the
// since of the following call (equal to the one given when there are no
// items).
type EventsPage struct {
	Next  string `json:"next"`
	Items []Item `json:"items"`
}

// MaxEventsTimeout is the longest wait the server grants a long poll.
const MaxEventsTimeout = 60 * time.Second

// Events returns the items after since ("" or "0" = from the start), at
// most limit of them (0 = the server's default, 100). When there are none
// yet it waits up to timeout (at most [MaxEventsTimeout]; 0 answers at
// once) for one to arrive.
func (c *Client) Events(ctx context.Context, since string, timeout time.Duration, limit int) (EventsPage, error) {
	query := url.Values{}
	if since != "" {
		query.Set("since", since)
	}
	if timeout > 0 {
		query.Set("timeout_ms", strconv.FormatInt(timeout.Milliseconds(), 10))
	}
	if limit > 0 {
		query.Set("limit", strconv.Itoa(limit))
	}
	var out EventsPage
	err := c.do(ctx, "GET", route("events"), query, nil, &out)
	if err == nil && out.Next == "" {
		// A server never leaves next empty; keep the caller's place if
		// one did rather than restart it from the beginning.
		out.Next = since
	}
	return out, err
}

// Reconnection delays of Follow: the first wait, doubled after each
// failed attempt up to the last.
const (
	followFirstRetry = 500 * time.Millisecond
	followMaxRetry   = 30 * time.Second
)

// maxSSELine bounds one line of the event stream: an item is one event
// (at most 64 KiB by the spec) or EDU, so this is generous.
const maxSSELine = 16 << 20

// errStreamEnded reports that the server closed the stream.
var errStreamEnded = errors.New("the server closed the stream")

// Follow reads the stream after since ("" or "0" = from the start) as
// Server-Sent Events and calls fn with each item, in order, until ctx ends
// (it then returns ctx's error) or fn returns an error (which it returns).
//
// A stream that breaks, because the server restarted for example, is
// opened again after the last item fn was given, so fn sees every item
// once (unless fn itself failed). The first connection is not retried:
// an unreachable server or a refusal (a wrong token) is returned at once.
// Refusals are never retried, except 502, 503 and 504, which a proxy or
// a server shutting down give.
func (c *Client) Follow(ctx context.Context, since string, fn func(Item) error) error {
	last := since
	delay := followFirstRetry
	for connected := false; ; connected = true {
		err := c.followOnce(ctx, &last, fn, func() { delay = followFirstRetry })
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		var stop *stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		var apiErr *Error
		if errors.As(err, &apiErr) && !retryableStatus(apiErr.Status) {
			return err
		}
		if !connected && IsUnreachable(err) {
			return err
		}
		if c.reconnected != nil {
			c.reconnected(err, delay)
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		delay = min(2*delay, followMaxRetry)
	}
}

// retryableStatus reports the statuses Follow waits out.
func retryableStatus(status int) bool {
	return status == 502 || status == 503 || status == 504
}

// stopError carries out of followOnce what ends Follow instead of a
// reconnection: fn's error, or an item that does not decode (reading it
// again would fail again).
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }

// followOnce opens the stream after *last and hands items to fn, moving
// *last past each one, until the stream ends. opened is called once the
// server has accepted the stream.
func (c *Client) followOnce(ctx context.Context, last *string, fn func(Item) error, opened func()) error {
	query := url.Values{}
	if *last != "" {
		query.Set("since", *last)
	}
	req, err := c.newRequest(ctx, "GET", route("events"), query, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *last != "" {
		req.Header.Set("Last-Event-ID", *last)
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readError(resp)
	}
	if mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mediaType != "text/event-stream" {
		return fmt.Errorf("GET %s: the server answered %q instead of text/event-stream", req.URL.Path, mediaType)
	}
	opened()

	return readSSE(resp.Body, func(id, data string) error {
		if err := deliver(id, data, fn); err != nil {
			return err
		}
		if id != "" {
			*last = id
		}
		return nil
	})
}

// readSSE parses a Server-Sent Events stream and calls dispatch with the
// id and data of each message, until the stream or dispatch fails. It
// returns errStreamEnded when the stream ends cleanly.
func readSSE(r io.Reader, dispatch func(id, data string) error) error {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 0, 64<<10), maxSSELine)
	var id, data string
	var hasData bool
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" { // the blank line ends a message
			if hasData {
				if err := dispatch(id, data); err != nil {
					return err
				}
			}
			id, data, hasData = "", "", false
			continue
		}
		if strings.HasPrefix(line, ":") { // a comment: the keepalive
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id = value
		case "data":
			if hasData {
				data += "\n"
			}
			data += value
			hasData = true
		}
		// "event" repeats the item's kind and "retry" is the server's
		// reconnection hint; Follow keeps its own backoff.
	}
	if err := scanner.Err(); err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	return errStreamEnded
}

// deliver decodes one stream message and gives it to fn.
func deliver(id, data string, fn func(Item) error) error {
	var item Item
	if err := json.Unmarshal([]byte(data), &item); err != nil {
		return &stopError{err: fmt.Errorf("event stream: item %s: %w", id, err)}
	}
	if item.Pos == "" {
		item.Pos = id
	}
	if err := fn(item); err != nil {
		return &stopError{err: err}
	}
	return nil
}
