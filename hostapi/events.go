package hostapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
)

// Bounds of the event stream.
const (
	defaultEventsLimit = 100
	maxEventsLimit     = 1000
	maxPollTimeout     = 60 * time.Second
)

// item is the wire form of one host event log entry, in the stream and
// in webhook batches.
type item struct {
	Pos    string          `json:"pos"`
	Kind   string          `json:"kind"`
	RoomID string          `json:"room_id"`
	Event  json.RawMessage `json:"event,omitempty"`
	EDU    json.RawMessage `json:"edu,omitempty"`
}

// token is the stream token of a position.
func token(pos int64) string { return strconv.FormatInt(pos, 10) }

func wireItem(it homeserver.StreamItem) item {
	return item{Pos: token(it.Pos), Kind: it.Kind, RoomID: it.RoomID, Event: it.Event, EDU: it.EDU}
}

func wireItems(items []homeserver.StreamItem) []item {
	out := make([]item, len(items))
	for i, it := range items {
		out[i] = wireItem(it)
	}
	return out
}

type eventsResponse struct {
	Next  string `json:"next"`
	Items []item `json:"items"`
}

// streamContext is the context of a request that may wait for a long
// time: it ends when the host hangs up or when the server begins to
// close, so that Close does not wait out long polls and streams.
func (s *Server) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.life, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// handleEvents serves GET /events: a long poll, or Server-Sent Events
// when the host accepts text/event-stream.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) error {
	query := r.URL.Query()
	var since int64
	if v := query.Get("since"); v != "" {
		pos, err := streamToken("since", v)
		if err != nil {
			return err
		}
		since = pos
	}
	limit, err := intParam(query, "limit", defaultEventsLimit, 1, maxEventsLimit)
	if err != nil {
		return err
	}
	if wantsEventStream(r) {
		if last := r.Header.Get("Last-Event-ID"); last != "" {
			pos, err := streamToken("Last-Event-ID", last)
			if err != nil {
				return err
			}
			since = pos
		}
		return s.serveEventStream(w, r, since, int(limit))
	}
	timeoutMS, err := intParam(query, "timeout_ms", 0, 0, maxPollTimeout.Milliseconds())
	if err != nil {
		return err
	}
	return s.longPoll(w, r, since, int(limit), time.Duration(timeoutMS)*time.Millisecond)
}

// wantsEventStream reports whether the Accept header asks for
// text/event-stream.
func wantsEventStream(r *http.Request) bool {
	for _, accept := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(accept, ",") {
			media, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && media == "text/event-stream" {
				return true
			}
		}
	}
	return false
}

// longPoll answers with the items after since, waiting up to timeout for
// the first one; a timeout or a server shutdown answers with no items.
func (s *Server) longPoll(w http.ResponseWriter, r *http.Request, since int64, limit int, timeout time.Duration) error {
	ctx, cancel := s.streamContext(r)
	defer cancel()
	items, err := s.host.Events(ctx, since, limit)
	if err != nil {
		return s.streamError(err)
	}
	if len(items) == 0 && timeout > 0 {
		waitCtx, cancelWait := context.WithTimeout(ctx, timeout)
		err := s.host.WaitEvents(waitCtx, since)
		cancelWait()
		switch {
		case err == nil:
			if items, err = s.host.Events(ctx, since, limit); err != nil {
				return s.streamError(err)
			}
		case waitCtx.Err() == nil:
			// The wait failed for a reason of its own (the store
			// closed).
			return s.streamError(err)
		}
		// Otherwise the timeout passed or the server is closing: an
		// empty answer, the host polls again with the same token.
	}
	next := since
	if len(items) > 0 {
		next = items[len(items)-1].Pos
	}
	writeJSON(w, http.StatusOK, eventsResponse{Next: token(next), Items: wireItems(items)})
	return nil
}

// streamError is the answer to a failed read of the log: 503 while the
// server is closing (the host retries elsewhen), the error otherwise.
func (s *Server) streamError(err error) error {
	if s.life.Err() != nil {
		return errShuttingDown
	}
	return err
}

// serveEventStream sends the items after since as Server-Sent Events,
// each with its token as id, then new items as they come, with a
// keepalive comment when the log has been quiet for s.keepAlive. It ends
// when the host hangs up or the server closes.
func (s *Server) serveEventStream(w http.ResponseWriter, r *http.Request, since int64, batch int) error {
	ctx, cancel := s.streamContext(r)
	defer cancel()
	// Read once before answering, so that a failure is still a Matrix
	// error rather than a stream that ends at once.
	items, err := s.host.Events(ctx, since, batch)
	if err != nil {
		return s.streamError(err)
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// Reverse proxies (nginx) must not buffer the stream.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		requestLog(r).Debug().Err(err).Msg("event stream: flush")
		return nil
	}
	log := requestLog(r)
	var buf bytes.Buffer
	for {
		if len(items) > 0 {
			buf.Reset()
			for _, it := range items {
				if err := writeSSEItem(&buf, it); err != nil {
					log.Error().Err(err).Msg("event stream: encode item")
					return nil
				}
			}
			if _, err := w.Write(buf.Bytes()); err != nil {
				return nil // the host hung up
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
			since = items[len(items)-1].Pos
		} else {
			waitCtx, cancelWait := context.WithTimeout(ctx, s.keepAlive)
			err := s.host.WaitEvents(waitCtx, since)
			cancelWait()
			if ctx.Err() != nil {
				return nil // the host hung up or the server is closing
			}
			if err != nil && waitCtx.Err() == nil {
				log.Error().Err(err).Msg("event stream: wait for the host log")
				return nil
			}
			if err != nil {
				if _, err := w.Write([]byte(": keepalive\n\n")); err != nil {
					return nil
				}
				if err := rc.Flush(); err != nil {
					return nil
				}
				continue
			}
		}
		items, err = s.host.Events(ctx, since, batch)
		if err != nil {
			if ctx.Err() == nil {
				log.Error().Err(err).Msg("event stream: read the host log")
			}
			return nil
		}
	}
}

// writeSSEItem appends one item as a Server-Sent Event. The item's JSON
// is one line: encoding/json escapes newlines inside strings and compacts
// the raw event and EDU JSON it embeds.
func writeSSEItem(buf *bytes.Buffer, it homeserver.StreamItem) error {
	data, err := json.Marshal(wireItem(it))
	if err != nil {
		return err
	}
	if strings.ContainsAny(it.Kind, "\r\n") {
		return errors.New("item kind contains a line break")
	}
	buf.WriteString("id: ")
	buf.WriteString(token(it.Pos))
	buf.WriteString("\nevent: ")
	buf.WriteString(it.Kind)
	buf.WriteString("\ndata: ")
	buf.Write(data)
	buf.WriteString("\n\n")
	return nil
}
